package loadtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procStats is a server process's CPU time and resident memory.
type procStats struct {
	cpuSeconds float64
	rssBytes   int64
}

// clockTicks is USER_HZ on Linux.
const clockTicks = 100

// readProc reads /proc/PID for the CPU and RSS of a process; pid 0 reads nothing.
func readProc(pid int) (procStats, error) {
	if pid == 0 {
		return procStats{}, nil
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStats{}, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStats{}, err
	}
	var rssKB int64
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			rssKB, _ = strconv.ParseInt(strings.Fields(line)[1], 10, 64)
		}
	}
	return procStats{cpuSeconds: (utime + stime) / clockTicks, rssBytes: rssKB << 10}, nil
}
