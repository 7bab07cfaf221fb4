//go:build cgo

package imv

// #include <stdint.h>
import "C"

import "unsafe"

// imvGoLog is libimv's log callback (log.go's imv_go_log calls it): one event, handed to
// the function SetLog was given.
//
//export imvGoLog
func imvGoLog(_ unsafe.Pointer, level C.int32_t, target, message *C.char) {
	if fn := logSink.Load(); fn != nil {
		(*fn)(LogLevel(level), C.GoString(target), C.GoString(message))
	}
}
