package main

import (
	"net/http"
	"net/http/pprof"
	"net/url"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
)

// registerServerRoutes adds the routes that belong to the server as a
// whole rather than to one component: health, metrics and discovery.
func registerServerRoutes(r chi.Router, cfg *config.Config) {
	r.Get("/health", func(w http.ResponseWriter, r *http.Request) {
		httputil.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if cfg.Listen.Metrics == "" {
		r.Handle("/metrics", metricsHandler())
	}
	if cfg.Listen.Pprof {
		r.HandleFunc("/debug/pprof/*", pprof.Index)
		r.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		r.HandleFunc("/debug/pprof/profile", pprof.Profile)
		r.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		r.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// Spec: client-server §4.1 "Well-known URI"; server-server §2.1 "Resolving server names".
	r.Get("/.well-known/matrix/client", func(w http.ResponseWriter, r *http.Request) {
		if cfg.WellKnown.ClientBaseURL == "" {
			httputil.WriteError(w, r, httputil.NotFound("No client well-known is configured"))
			return
		}
		httputil.WriteJSON(w, http.StatusOK, map[string]any{"m.homeserver": map[string]string{"base_url": cfg.WellKnown.ClientBaseURL}})
	})
	r.Get("/.well-known/matrix/server", func(w http.ResponseWriter, r *http.Request) {
		if cfg.WellKnown.Server == "" {
			httputil.WriteError(w, r, httputil.NotFound("No server well-known is configured"))
			return
		}
		httputil.WriteJSON(w, http.StatusOK, map[string]string{"m.server": cfg.WellKnown.Server})
	})
}

func metricsHandler() http.Handler { return promhttp.Handler() }

// redactURL hides a password in a database URL before it is printed.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
