package httputil

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	requestDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "parley",
		Name:      "http_request_duration_seconds",
		Help:      "HTTP request latency by route pattern, method and status.",
		Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 30, 60},
	}, []string{"route", "method", "status"})
	requestsInFlight = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: "parley",
		Name:      "http_requests_in_flight",
		Help:      "HTTP requests being served, including long-polls.",
	})
)

// Metrics records each request's latency under its route pattern (not the
// raw path, so label cardinality stays bounded by the route table).
func Metrics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		requestsInFlight.Inc()
		defer requestsInFlight.Dec()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		requestDuration.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Observe(time.Since(start).Seconds())
	})
}
