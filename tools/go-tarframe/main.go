// go-tarframe reads a tar stream on stdin with Go's archive/tar, as containerd and the
// image scanners read layers, and prints what it framed: one line per entry, then "end",
// or a line "error ..." where the reader stopped. imv's tests compare this with how imv
// frames the same bytes (src/backend/local/unpack/tar_stream.rs, `listing`); the format is
// that function's.
//
//	entry <typeflag> <name hex> <linkname hex> <size> <mode> <uid> <gid> <mtime s> <mtime ns> <devmajor> <devminor> <data sha256>
//	global <name hex>              (a global PAX header, which Go returns as an entry)
//	pax <key hex> <value hex>      (the entry's PAX records, sorted by key)
package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
)

func main() {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	tr := tar.NewReader(bufio.NewReaderSize(os.Stdin, 1<<20))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			fmt.Fprintln(out, "end")
			return
		}
		if err != nil {
			fmt.Fprintf(out, "error %v\n", err)
			return
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			fmt.Fprintf(out, "global %x\n", hdr.Name)
		} else {
			h := sha256.New()
			if _, err := io.Copy(h, tr); err != nil {
				fmt.Fprintf(out, "error %v\n", err)
				return
			}
			fmt.Fprintf(out, "entry %d %x %x %d %d %d %d %d %d %d %d %s\n",
				hdr.Typeflag, hdr.Name, hdr.Linkname, hdr.Size, hdr.Mode, hdr.Uid, hdr.Gid,
				hdr.ModTime.Unix(), hdr.ModTime.Nanosecond(), hdr.Devmajor, hdr.Devminor,
				hex.EncodeToString(h.Sum(nil)))
		}
		keys := make([]string, 0, len(hdr.PAXRecords))
		for k := range hdr.PAXRecords {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(out, "pax %x %x\n", k, hdr.PAXRecords[k])
		}
	}
}
