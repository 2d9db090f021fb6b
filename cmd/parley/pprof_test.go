package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/parley-chat/parley/config"
)

func TestPprofRouteIsConfigGated(t *testing.T) {
	for _, tc := range []struct {
		on   bool
		want int
	}{{false, http.StatusNotFound}, {true, http.StatusOK}} {
		cfg := config.Default()
		cfg.Listen.Pprof = tc.on
		r := chi.NewRouter()
		registerServerRoutes(r, cfg)
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1"} {
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			if rec.Code != tc.want {
				t.Errorf("pprof=%v GET %s: status %d, want %d", tc.on, path, rec.Code, tc.want)
			}
		}
	}
	if config.Default().Listen.Pprof {
		t.Error("pprof must be off by default")
	}
}
