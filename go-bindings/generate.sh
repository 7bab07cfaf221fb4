#!/usr/bin/env bash
# Regenerate api/v1 (the Go code of proto/imv/v1/imv.proto: messages and the ttrpc client)
# with pinned generator versions. The output is checked in; run this after changing the
# proto and commit the result. Needs protoc (Debian: protobuf-compiler) and the Go module
# proxy (the generators are installed with `go install` into a temporary directory).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/.." && pwd)"

# Keep in step with go.mod: the runtime libraries the generated code calls.
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_TTRPC=github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.10

tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
GOBIN="$tools" go install "$PROTOC_GEN_GO"
GOBIN="$tools" go install "$PROTOC_GEN_GO_TTRPC"

# go_package in the proto names the import path; module= strips the module prefix so the
# files land in go-bindings/api/v1.
PATH="$tools:$PATH" protoc \
    --proto_path="$top/proto" \
    --go_out="$here" --go_opt=module=github.com/imv-project/imv/go-bindings \
    --go-ttrpc_out="$here" --go-ttrpc_opt=module=github.com/imv-project/imv/go-bindings \
    imv/v1/imv.proto
gofmt -l "$here/api" | { ! grep . ; } || { echo "generate.sh: generated code is not gofmt-clean" >&2; exit 1; }
echo "generated: $(cd "$here" && ls api/v1/*.go | tr '\n' ' ')"
