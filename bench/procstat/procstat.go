// Package procstat reads what Linux's /proc says of a process: the CPU time it has used and its
// resident memory. The benchmarks measure tokend, the baselines and the fake DingTalk with it.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on every Linux ABI.
const userHZ = 100

// CPUTime returns the user+system CPU time pid has used so far, all threads included.
func CPUTime(pid int) (time.Duration, error) {
	c, err := CPUTimes(pid)
	return c.User + c.System, err
}

// CPU is a process's CPU time so far, all threads included, split as /proc/PID/stat splits it: in
// user space and in the kernel on the process's behalf (its system calls, the network stack under
// them).
type CPU struct{ User, System time.Duration }

// Sub is c - o, field by field.
func (c CPU) Sub(o CPU) CPU { return CPU{c.User - o.User, c.System - o.System} }

// CPUTimes returns pid's user and system CPU time so far.
func CPUTimes(pid int) (CPU, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPU{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces: count fields after it.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return CPU{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return CPU{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return CPU{}, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return CPU{time.Duration(ut) * time.Second / userHZ, time.Duration(st) * time.Second / userHZ}, nil
}

// Memory is a process's resident memory, from /proc/PID/status.
type Memory struct {
	RSS, Peak int64 // bytes: VmRSS and VmHWM
}

// MemoryOf returns pid's resident memory now and at its peak.
func MemoryOf(pid int) (Memory, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			m.RSS = v << 10
		case "VmHWM:":
			m.Peak = v << 10
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return m, nil
}

// MiB formats a byte count in MiB, one decimal.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// RSS returns pid's resident memory now (VmRSS), in bytes.
func RSS(pid int) (int64, error) {
	m, err := MemoryOf(pid)
	return m.RSS, err
}
