#!/usr/bin/env bash
# Regenerate api/v1, the Go code of proto/imv/v1/imv.proto (messages, and the ttrpc client
# and server glue), with pinned generator versions. The output is checked in: run this
# after changing the proto, and commit the result.
#
#   go-bindings/generate.sh           rewrite api/v1/*.pb.go
#   go-bindings/generate.sh --check   generate into a temporary directory and fail if
#                                     api/v1 differs (scripts/test runs this)
#
# Needs protoc (Debian: protobuf-compiler; 3.21 here, recorded in the files' headers) and
# the Go module proxy: the generators are installed with `go install` into a temporary
# directory, never into GOPATH/bin.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/.." && pwd)"
module=github.com/imv-project/imv/go-bindings

# protoc-gen-go at the version of google.golang.org/protobuf in go.mod; protoc-gen-go-ttrpc
# from the ttrpc release the client code is written against.
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_TTRPC=github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.10

check=false
case ${1:-} in
--check) check=true ;;
"") ;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# One module per `go install pkg@version`.
GOBIN="$tmp/bin" go install "$PROTOC_GEN_GO"
GOBIN="$tmp/bin" go install "$PROTOC_GEN_GO_TTRPC"

out="$here"
$check && out="$tmp/out" && mkdir -p "$out"
# go_package in the proto is the import path (module/api/v1); module= strips the module
# prefix, so the files land in <out>/api/v1.
PATH="$tmp/bin:$PATH" protoc \
    --proto_path="$top/proto" \
    --go_out="$out" --go_opt=module="$module" \
    --go-ttrpc_out="$out" --go-ttrpc_opt=module="$module" \
    imv/v1/imv.proto

if $check; then
    if ! diff -ru "$here/api/v1" "$out/api/v1"; then
        echo "go-bindings/api/v1 is out of date with proto/imv/v1/imv.proto: run go-bindings/generate.sh" >&2
        exit 1
    fi
    echo "go-bindings/api/v1 is up to date"
else
    echo "generated: $(cd "$here" && echo api/v1/*.pb.go)"
fi
