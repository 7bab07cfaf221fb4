package imv

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
)

// LogLevel is how much of imv's log [SetLog] forwards: a level forwards the events at it
// and the more severe ones. The numbers are libimv's imv_log_level.
type LogLevel int

const (
	// LogOff forwards nothing.
	LogOff LogLevel = iota
	// LogError: a call that failed for a reason its error does not carry.
	LogError
	// LogWarn: something left behind, or a fallback taken.
	LogWarn
	// LogInfo: what was done, a line per volume mounted, image unpacked or imported.
	LogInfo
	// LogDebug: each step of a call.
	LogDebug
	// LogTrace: each call to containerd and the kernel, with its duration.
	LogTrace
)

var logLevelNames = []string{"off", "error", "warn", "info", "debug", "trace"}

// String is the level's name, as ParseLogLevel reads it.
func (l LogLevel) String() string {
	if l < LogOff || int(l) >= len(logLevelNames) {
		return fmt.Sprintf("LogLevel(%d)", int(l))
	}
	return logLevelNames[l]
}

// ParseLogLevel reads a level's name: off, error, warn (or warning), info, debug, trace;
// case does not matter.
func ParseLogLevel(s string) (LogLevel, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	if name == "warning" {
		name = "warn"
	}
	for i, n := range logLevelNames {
		if n == name {
			return LogLevel(i), nil
		}
	}
	return LogOff, newError(codes.InvalidArgument, fmt.Sprintf("imv: log level %q: want one of %s", s, strings.Join(logLevelNames, ", ")))
}
