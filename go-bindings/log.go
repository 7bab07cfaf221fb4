//go:build cgo

package imv

// The C side of SetLog: a shim with the const-qualified signature imv_log_fn wants, over
// the exported Go function (log_export.go: a file with //export may only declare in its
// preamble).

/*
#include <stdint.h>
#include <imv.h>
extern void imvGoLog(void *user, int32_t level, char *target, char *message);
static void imv_go_log(void *user, int32_t level, const char *target, const char *message) {
	imvGoLog(user, level, (char *)target, (char *)message);
}
static imv_status imv_go_set_log(int32_t level, int on, imv_error **err) {
	return imv_set_log(level, on ? imv_go_log : NULL, NULL, err);
}
*/
import "C"

import (
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
)

// logSink is where imvGoLog sends libimv's events (nil: nowhere).
var logSink atomic.Pointer[func(level LogLevel, target, message string)]

// setLogMu keeps two SetLog calls from interleaving their halves.
var setLogMu sync.Mutex

// SetLog sends the log of imv in this process (every [Library], one process-wide setting)
// to fn: the events of imv's own code at level and more severe, each with its module
// (target, e.g. "imv::volumes::making") and its text and fields (message). Until it is
// called, imv in process logs nothing. fn is called on any thread, possibly from several at
// once, and must not call imv. LogOff, or a nil fn, stops the log. FailedPrecondition when
// the process has a Rust tracing subscriber of its own.
func SetLog(level LogLevel, fn func(level LogLevel, target, message string)) error {
	if level < LogOff || level > LogTrace {
		return newError(codes.InvalidArgument, fmt.Sprintf("imv: log level %d: want LogOff to LogTrace", int(level)))
	}
	setLogMu.Lock()
	defer setLogMu.Unlock()
	on := C.int(0)
	previous := logSink.Load()
	if fn != nil && level != LogOff {
		on = 1
		logSink.Store(&fn)
	}
	var a cAlloc
	defer a.free()
	errp := a.errPtr()
	if st := C.imv_go_set_log(C.int32_t(level), on, errp); st != C.IMV_OK {
		logSink.Store(previous)
		return takeError(st, errp)
	}
	if on == 0 {
		logSink.Store(nil)
	}
	return nil
}
