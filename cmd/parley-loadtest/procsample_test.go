package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestParseStatusRSS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"typical", "Name:\tparley\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n", 12345 * 1024, false},
		{"zero", "VmRSS:\t0 kB\n", 0, false},
		{"no VmRSS (kernel thread)", "Name:\tkthreadd\nThreads:\t1\n", 0, true},
		{"unexpected unit", "VmRSS:\t12 MB\n", 0, true},
		{"not a number", "VmRSS:\tlots kB\n", 0, true},
		{"VmRSSX is not VmRSS", "VmRSSX:\t5 kB\nVmRSS:\t6 kB\n", 6 * 1024, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatusRSS([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseStatusRSS = %d, %v; want %d, err=%v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// statLine builds a /proc/PID/stat line with the given command name and
// utime/stime in fields 14 and 15.
func statLine(comm string, utime, stime int) string {
	s := "4242 (" + comm + ") S 1 4242 4242 0 -1 4194560 1234 0 0 0 "
	s += strconv.Itoa(utime) + " " + strconv.Itoa(stime) + " 0 0 20 0 9 0 100 1000000 500 18446744073709551615"
	return s
}

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{"typical", statLine("parley", 150, 50), 200, false},
		{"command with spaces and parens", statLine("a ) b (c)", 7, 3), 10, false},
		{"no parenthesis", "4242 parley S 1", 0, true},
		{"truncated", "4242 (parley) S 1 2 3", 0, true},
		{"non-numeric utime", "4242 (p) S 1 4242 4242 0 -1 0 0 0 0 0 x 1 0", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseStatCPU = %d, %v; want %d, err=%v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestSummarizeSamples(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	samples := []ProcSample{
		{At: at(0), RSSBytes: 10 << 20, CPUTicks: 1000},
		{At: at(1), RSSBytes: 30 << 20, CPUTicks: 1050},
		{At: at(2), RSSBytes: 20 << 20, CPUTicks: 1100},
		{At: at(4), RSSBytes: 25 << 20, CPUTicks: 1500},
	}
	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     ProcStats
	}{
		{"whole window", at(0), at(4), ProcStats{Samples: 4, StartRSSMiB: 10, PeakRSSMiB: 30, EndRSSMiB: 25, CPUPercent: 125}},
		{"half a core", at(0), at(2), ProcStats{Samples: 3, StartRSSMiB: 10, PeakRSSMiB: 30, EndRSSMiB: 20, CPUPercent: 50}},
		{"two cores busy", at(2), at(4), ProcStats{Samples: 2, StartRSSMiB: 20, PeakRSSMiB: 25, EndRSSMiB: 25, CPUPercent: 200}},
		{"one sample: no CPU figure", at(0.5), at(1.5), ProcStats{Samples: 1, StartRSSMiB: 30, PeakRSSMiB: 30, EndRSSMiB: 30}},
		{"no samples", at(5), at(6), ProcStats{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := summarizeSamples(samples, tc.from, tc.to)
			got.startRSS, got.peakRSS = 0, 0
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSamplerFakeProc(t *testing.T) {
	dir := t.TempDir()
	pdir := filepath.Join(dir, "77")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(rssKB, ticks int) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(pdir, "status"), []byte("VmRSS:\t"+strconv.Itoa(rssKB)+" kB\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pdir, "stat"), []byte(statLine("srv", ticks, 0)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(1024, 0)
	if _, err := StartSampler(dir, 78, time.Millisecond); err == nil {
		t.Fatal("StartSampler on a missing PID succeeded")
	}
	start := time.Now()
	s, err := StartSampler(dir, 77, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	write(4096, 10)
	if _, err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	st := s.Window(start, time.Now())
	if st.PeakRSSMiB != 4 || st.StartRSSMiB != 1 || st.Samples < 3 || st.CPUPercent <= 0 {
		t.Errorf("window = %+v", st)
	}
	// The process going away ends sampling with an error.
	if err := os.RemoveAll(pdir); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if err := s.Stop(); err == nil {
		t.Error("Stop after the process vanished reported no error")
	}
}

func TestSamplerSelf(t *testing.T) {
	s, err := StartSampler("/proc", os.Getpid(), 10*time.Millisecond)
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	start := time.Now()
	for time.Since(start) < 100*time.Millisecond {
	}
	if _, err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	st := s.Window(start.Add(-time.Second), time.Now())
	if st.PeakRSSMiB <= 0 || st.CPUPercent <= 0 {
		t.Errorf("sampling this busy process gave %+v", st)
	}
}
