package procstat

import (
	"os"
	"testing"
	"time"
)

func TestOwnProcess(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	after := before
	for end := time.Now().Add(5 * time.Second); after <= before && time.Now().Before(end); { // burn CPU
		if after, err = CPUTime(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if after <= before {
		t.Errorf("CPU time %v after burning 5 s of wall time, %v before", after, before)
	}
	m, err := MemoryOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Errorf("memory %+v: want RSS > 0 and peak >= RSS", m)
	}
	c, err := CPUTimes(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if c.User+c.System < after {
		t.Errorf("CPUTimes %+v: want user+system >= %v, the total read before", c, after)
	}
	if d := c.Sub(CPU{User: c.User, System: c.System}); d != (CPU{}) {
		t.Errorf("c.Sub(c) = %+v, want zero", d)
	}
	if _, err := CPUTime(-1); err == nil {
		t.Error("CPUTime(-1): no error")
	}
	if got := MiB(3 << 19); got != "1.5 MiB" {
		t.Errorf("MiB = %q", got)
	}
}
