package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
// /proc/PID/stat. Linux fixes it at 100 for every userspace interface
// whatever the kernel's HZ, so it is a constant here (reading it via
// sysconf(_SC_CLK_TCK) would need cgo).
const clockTicksPerSecond = 100

// ProcSample is one reading of a process's resident memory and CPU time.
type ProcSample struct {
	At       time.Time
	RSSBytes int64
	// CPUTicks is user plus system time, in clock ticks.
	CPUTicks uint64
}

// ProcStats summarises the samples of a time window.
type ProcStats struct {
	Samples     int     `json:"samples"`
	StartRSSMiB float64 `json:"start_rss_mib"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	EndRSSMiB   float64 `json:"end_rss_mib"`
	// CPUPercent is the average CPU use over the window in percent of
	// one core (200 means two cores fully busy).
	CPUPercent float64 `json:"cpu_percent_of_one_core"`

	startRSS, peakRSS int64
}

// parseStatusRSS returns VmRSS from the text of /proc/PID/status.
func parseStatusRSS(status []byte) (int64, error) {
	for _, line := range bytes.Split(status, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("unexpected VmRSS value %q", f[0])
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmRSS line (kernel thread or zombie?)")
}

// parseStatCPU returns utime+stime from the text of /proc/PID/stat. The
// command name (field 2) is in parentheses and may itself contain spaces
// and parentheses, so fields are counted from the last ')'.
func parseStatCPU(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	// After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields after the command name", len(f))
	}
	utime, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("utime/stime: %w", err)
	}
	return utime + stime, nil
}

// readProc takes one sample of pid from procDir (normally /proc).
func readProc(procDir string, pid int) (ProcSample, error) {
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	now := time.Now()
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return ProcSample{}, err
	}
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return ProcSample{}, err
	}
	rss, err := parseStatusRSS(status)
	if err != nil {
		return ProcSample{}, fmt.Errorf("%s/status: %w", dir, err)
	}
	ticks, err := parseStatCPU(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("%s/stat: %w", dir, err)
	}
	return ProcSample{At: now, RSSBytes: rss, CPUTicks: ticks}, nil
}

// Sampler reads a process's RSS and CPU time at a fixed interval until
// stopped or until the process disappears.
type Sampler struct {
	procDir string
	pid     int
	stop    chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	samples []ProcSample
	err     error
}

// StartSampler takes a first sample at once (so a wrong PID fails here)
// and then one every interval.
func StartSampler(procDir string, pid int, every time.Duration) (*Sampler, error) {
	first, err := readProc(procDir, pid)
	if err != nil {
		return nil, fmt.Errorf("sample pid %d: %w", pid, err)
	}
	s := &Sampler{procDir: procDir, pid: pid, stop: make(chan struct{}), done: make(chan struct{}), samples: []ProcSample{first}}
	go s.run(every)
	return s, nil
}

func (s *Sampler) run(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		smp, err := readProc(s.procDir, s.pid)
		s.mu.Lock()
		if err != nil {
			s.err = err
			s.mu.Unlock()
			return
		}
		s.samples = append(s.samples, smp)
		s.mu.Unlock()
	}
}

// Stop ends sampling and returns the error that ended it early, if any
// (for example the server exited).
func (s *Sampler) Stop() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Sample reads the process now, outside the schedule, and records it.
func (s *Sampler) Sample() (ProcSample, error) {
	smp, err := readProc(s.procDir, s.pid)
	if err != nil {
		return ProcSample{}, err
	}
	s.mu.Lock()
	s.samples = append(s.samples, smp)
	s.mu.Unlock()
	return smp, nil
}

// Window summarises the samples taken between from and to (inclusive).
func (s *Sampler) Window(from, to time.Time) ProcStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return summarizeSamples(s.samples, from, to)
}

// summarizeSamples expects samples in time order.
func summarizeSamples(samples []ProcSample, from, to time.Time) ProcStats {
	var in []ProcSample
	for _, smp := range samples {
		if !smp.At.Before(from) && !smp.At.After(to) {
			in = append(in, smp)
		}
	}
	var st ProcStats
	st.Samples = len(in)
	if len(in) == 0 {
		return st
	}
	first, last := in[0], in[len(in)-1]
	st.startRSS = first.RSSBytes
	for _, smp := range in {
		st.peakRSS = max(st.peakRSS, smp.RSSBytes)
	}
	st.StartRSSMiB = mib(first.RSSBytes)
	st.PeakRSSMiB = mib(st.peakRSS)
	st.EndRSSMiB = mib(last.RSSBytes)
	if secs := last.At.Sub(first.At).Seconds(); secs > 0 && last.CPUTicks >= first.CPUTicks {
		// ticks/s at 100 ticks per CPU-second is already percent of a core.
		st.CPUPercent = round2(float64(last.CPUTicks-first.CPUTicks) / clockTicksPerSecond / secs * 100)
	}
	return st
}

func mib(b int64) float64 { return round2(float64(b) / (1 << 20)) }

func round2(f float64) float64 { return math.Round(f*100) / 100 }
