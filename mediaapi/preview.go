package mediaapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/mediaapi/storage"
)

const (
	// previewCacheTTL is how long a fetched preview is served again.
	previewCacheTTL = time.Hour
	// maxPreviewPageBytes is how much of a page is read; OpenGraph tags
	// sit in the head, so a truncated page still previews.
	maxPreviewPageBytes = 1 << 20
	// maxPreviewImageBytes bounds a fetched og:image (and the upload
	// limit bounds it further).
	maxPreviewImageBytes = 10 << 20
	// previewFetchTimeout bounds each fetch, redirects included.
	previewFetchTimeout = 10 * time.Second
	maxPreviewRedirects = 5
	maxPreviewURLLength = 2048
	// maxPreviewValueBytes and maxPreviewKeys bound what a page can put
	// into the answer.
	maxPreviewValueBytes = 2000
	maxPreviewKeys       = 64
)

// internalPrefixes are ranges that are not the public internet, beyond
// what netip's Is* methods cover: CGNAT, documentation and benchmarking
// ranges, reserved space, and IPv6 transition ranges that can embed an
// internal IPv4 address.
var internalPrefixes = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
		"64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32", "2002::/16", "fec0::/10",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// isInternal reports whether addr is private, loopback, link-local,
// CGNAT, multicast, unspecified, an IPv6 ULA or otherwise not a public
// unicast address.
func isInternal(addr netip.Addr) bool {
	addr = addr.Unmap()
	if addr.IsLoopback() || addr.IsPrivate() || addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() ||
		addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified() || !addr.IsValid() {
		return true
	}
	for _, p := range internalPrefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// blockedAddressError is a refusal to connect to an internal address.
type blockedAddressError struct{ addr netip.Addr }

func (e *blockedAddressError) Error() string {
	return fmt.Sprintf("refusing to fetch from internal address %s", e.addr)
}

// webFetcher fetches from the web (URL previews, media redirects of other
// servers) without letting a user or another server reach
// the server's own network (server-side request forgery). The check runs
// on the address actually being connected to, after DNS resolution and on
// every redirect, so neither DNS rebinding nor a redirect gets around it.
type webFetcher struct {
	allow  []netip.Prefix
	client *http.Client
}

func newWebFetcher(allowCIDRs []string) (*webFetcher, error) {
	p := &webFetcher{}
	for _, c := range allowCIDRs {
		prefix, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("media.url_preview_allow_private: %w", err)
		}
		p.allow = append(p.allow, prefix.Masked())
	}
	dialer := &net.Dialer{Timeout: previewFetchTimeout, Control: p.control}
	transport := &http.Transport{
		// No proxy: the address checked must be the address dialled.
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSHandshakeTimeout:    previewFetchTimeout,
		ResponseHeaderTimeout:  previewFetchTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
	}
	// No overall timeout here: callers bound each fetch by its context
	// (a page for a preview gets seconds, a remote file minutes).
	p.client = &http.Client{
		Transport: transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxPreviewRedirects {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to unsupported scheme %q", req.URL.Scheme)
			}
			return nil
		},
	}
	return p, nil
}

// permitted says whether addr may be fetched.
func (p *webFetcher) permitted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, prefix := range p.allow {
		if prefix.Contains(addr) {
			return true
		}
	}
	return !isInternal(addr)
}

// control runs after the socket is made and before it connects.
func (p *webFetcher) control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("dialling %q: not an IP address", address)
	}
	if !p.permitted(addr) {
		return &blockedAddressError{addr}
	}
	return nil
}

// fetched is a response body read up to a limit.
type fetched struct {
	body        []byte
	truncated   bool
	contentType string
	finalURL    *url.URL
}

// get sends a GET and returns a 200 response; the caller closes its body.
func (p *webFetcher) get(ctx context.Context, u *url.URL, accept string) (*http.Response, error) {
	if addr, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !p.permitted(addr) {
		return nil, &blockedAddressError{addr}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "Parley (Matrix homeserver)")
	req.Header.Set("Accept", accept)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered HTTP %d", u.Host, resp.StatusCode)
	}
	return resp, nil
}

// fetch gets a URL and reads up to limit bytes of it, within
// previewFetchTimeout.
func (p *webFetcher) fetch(ctx context.Context, u *url.URL, limit int64, accept string) (*fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, previewFetchTimeout)
	defer cancel()
	resp, err := p.get(ctx, u, accept)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	f := &fetched{body: body, contentType: resp.Header.Get("Content-Type"), finalURL: resp.Request.URL}
	if int64(len(body)) > limit {
		f.body, f.truncated = body[:limit], true
	}
	return f, nil
}

// fetchError turns a failed fetch into the client's answer. Internal
// addresses get 403 M_FORBIDDEN (the spec names no error for this, and
// it is a refusal, not a failure); anything else is the far side's
// problem: 502.
func fetchError(err error) error {
	var blocked *blockedAddressError
	if errors.As(err, &blocked) {
		return httputil.Forbidden("URL previews of internal network addresses are not allowed")
	}
	return httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "Could not fetch the URL to preview")
}

// handlePreviewURL is GET /_matrix/client/v1/media/preview_url (client-
// server spec): OpenGraph data for a page, its image stored as media.
func (s *Service) handlePreviewURL(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Media.URLPreviewEnabled {
		httputil.WriteError(w, r, httputil.Forbidden("URL previews are disabled on this server"))
		return
	}
	q := r.URL.Query()
	raw := q.Get("url")
	if raw == "" {
		httputil.WriteError(w, r, httputil.MissingParam("url is required"))
		return
	}
	if ts := q.Get("ts"); ts != "" {
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("ts must be an integer"))
			return
		}
	}
	u, err := url.Parse(raw)
	if err != nil || len(raw) > maxPreviewURLLength || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("url must be an http or https URL of at most %d bytes without credentials", maxPreviewURLLength))
		return
	}
	u.Fragment, u.RawFragment = "", ""
	key := u.String()
	ctx := r.Context()
	if cached, err := s.db.GetPreview(ctx, key, s.now().Add(-previewCacheTTL).UnixMilli()); err == nil {
		writeRawJSON(w, cached)
		return
	} else if !errors.Is(err, storage.ErrNotFound) {
		httputil.WriteError(w, r, err)
		return
	}
	// Only previews that need a fetch count against the user's rate.
	if err := s.previewLimit.Allow(httputil.CallerFrom(ctx).UserID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	v, err, _ := s.flights.Do("preview|"+key, func() (any, error) {
		fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*previewFetchTimeout)
		defer cancel()
		return s.buildPreview(fetchCtx, u)
	})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	writeRawJSON(w, v.(string))
}

func writeRawJSON(w http.ResponseWriter, body string) {
	httputil.WriteJSON(w, http.StatusOK, json.RawMessage(body))
}

// buildPreview fetches the page, extracts its OpenGraph data, stores its
// image and caches the answer.
func (s *Service) buildPreview(ctx context.Context, u *url.URL) (string, error) {
	page, err := s.web.fetch(ctx, u, maxPreviewPageBytes, "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.5")
	if err != nil {
		return "", fetchError(err)
	}
	og := map[string]any{}
	mt := mediaType(page.contentType)
	var imageURL *url.URL
	switch {
	case mt == "text/html" || mt == "application/xhtml+xml":
		og = parseOpenGraph(page.body, page.contentType)
		if img, ok := og["og:image"].(string); ok {
			imageURL, _ = page.finalURL.Parse(img)
		}
		for _, k := range []string{"og:image", "og:image:url", "og:image:secure_url", "og:image:type", "og:image:width", "og:image:height"} {
			delete(og, k)
		}
		if imageURL != nil && imageURL.Scheme != "http" && imageURL.Scheme != "https" {
			imageURL = nil
		}
	case strings.HasPrefix(mt, "image/") && !page.truncated:
		if err := s.storePreviewImage(ctx, og, page.body); err != nil {
			return "", err
		}
	}
	if imageURL != nil {
		limit := min(int64(maxPreviewImageBytes), s.cfg.Media.MaxUploadBytes)
		img, err := s.web.fetch(ctx, imageURL, limit, "image/*")
		// A page whose image cannot be had still previews without it.
		if err == nil && !img.truncated && strings.HasPrefix(mediaType(img.contentType), "image/") {
			if err := s.storePreviewImage(ctx, og, img.body); err != nil {
				return "", err
			}
		}
	}
	body, err := json.Marshal(og)
	if err != nil {
		return "", err
	}
	if err := s.db.PutPreview(ctx, u.String(), s.now().UnixMilli(), string(body)); err != nil {
		return "", err
	}
	return string(body), nil
}

// storePreviewImage stores a fetched image as media and describes it in
// og. Bytes that are not an image we can read are left out.
func (s *Service) storePreviewImage(ctx context.Context, og map[string]any, data []byte) error {
	info, err := probeImage(bytes.NewReader(data))
	if err != nil {
		return nil
	}
	st, err := s.blobs.Stage(ctx, bytes.NewReader(data))
	if err != nil {
		return err
	}
	now := s.now().UnixMilli()
	m := &storage.Media{
		ServerName: s.serverName, MediaID: newMediaID(), ContentType: info.contentType(),
		Size: st.Size(), SHA256: st.Hash(), CreatedTS: now, UploadedTS: now,
	}
	if err := s.storeBlob(ctx, st, func(tx *storage.BlobTx) error { return tx.InsertMedia(ctx, m) }); err != nil {
		return err
	}
	og["og:image"] = mxcURI(m.ServerName, m.MediaID)
	og["og:image:type"] = m.ContentType
	og["og:image:width"], og["og:image:height"] = info.displaySize()
	og["matrix:image:size"] = m.Size
	return nil
}

// parseOpenGraph reads og:* meta tags, falling back to <title> and the
// description meta tag, from an HTML page in whatever charset it declares.
func parseOpenGraph(body []byte, contentType string) map[string]any {
	var r io.Reader = bytes.NewReader(body)
	if cr, err := charset.NewReader(r, contentType); err == nil {
		r = cr
	}
	og := map[string]any{}
	var title, description string
	inTitle := false
	z := html.NewTokenizer(r)
	for {
		switch z.Next() {
		case html.ErrorToken:
			if _, ok := og["og:title"]; !ok && title != "" {
				og["og:title"] = title
			}
			if _, ok := og["og:description"]; !ok && description != "" {
				og["og:description"] = description
			}
			return og
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = true
			case "meta":
				if !hasAttr {
					continue
				}
				var key, content string
				for {
					k, v, more := z.TagAttr()
					switch string(k) {
					case "property", "name":
						if key == "" {
							key = strings.ToLower(string(v))
						}
					case "content":
						content = string(v)
					}
					if !more {
						break
					}
				}
				content = clipValue(content)
				switch {
				case strings.HasPrefix(key, "og:") && len(key) <= 64:
					if _, seen := og[key]; !seen && len(og) < maxPreviewKeys {
						og[key] = content
					}
				case key == "description" && description == "":
					description = content
				}
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = false
			}
		case html.TextToken:
			if inTitle && title == "" {
				title = clipValue(strings.TrimSpace(string(z.Text())))
			}
		}
	}
}

// clipValue cuts a value to maxPreviewValueBytes on a character boundary.
func clipValue(v string) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	if len(v) <= maxPreviewValueBytes {
		return v
	}
	cut := maxPreviewValueBytes
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return v[:cut]
}
