package main

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Summary describes a set of latency samples in milliseconds.
type Summary struct {
	Count  int     `json:"count"`
	MinMs  float64 `json:"min_ms"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P95Ms  float64 `json:"p95_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// Percentile returns the nearest-rank percentile p (0-100) of sorted
// samples: the smallest sample such that at least p% of the samples are
// less than or equal to it. No interpolation, so the answer is always a
// latency that was really observed. Zero for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Summarize sorts samples in place and summarises them.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	var total time.Duration
	for _, d := range samples {
		total += d
	}
	return Summary{
		Count:  len(samples),
		MinMs:  ms(samples[0]),
		MeanMs: ms(total / time.Duration(len(samples))),
		P50Ms:  ms(Percentile(samples, 50)),
		P95Ms:  ms(Percentile(samples, 95)),
		P99Ms:  ms(Percentile(samples, 99)),
		MaxMs:  ms(samples[len(samples)-1]),
	}
}

// Median returns the median of values (the mean of the middle two for an
// even count); zero for none. values is not modified.
func Median(values []float64) float64 {
	n := len(values)
	if n == 0 {
		return 0
	}
	s := slices.Clone(values)
	slices.Sort(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// Recorder collects latency samples from many goroutines.
type Recorder struct {
	mu      sync.Mutex
	samples []time.Duration
}

// Add records one sample.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, d)
	r.mu.Unlock()
}

// Len returns the number of samples so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.samples)
}

// Summary summarises the samples recorded so far.
func (r *Recorder) Summary() Summary {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	r.mu.Unlock()
	return Summarize(s)
}
