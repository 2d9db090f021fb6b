package userapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/userapi/api"
	"github.com/parley-chat/parley/userapi/storage"
)

// Spec: client-server §"End-to-End Encryption" (key distribution) and
// §"Cross-signing".

const (
	// defaultRemoteKeyTimeout bounds a query or claim to other servers
	// when the client gives no timeout (the spec's default is 10s).
	defaultRemoteKeyTimeout = 10 * time.Second
	maxRemoteKeyTimeout     = 60 * time.Second
	// publishRetryInterval is how often queued device-list updates are
	// retried when the bus was unavailable, and the safety net for a
	// missed wake-up.
	publishRetryInterval = 5 * time.Second
	publishBatch         = 100
	maxKeyIDLength       = 255
)

// keyState is the part of Service serving end-to-end encryption.
type keyState struct {
	remote api.RemoteKeys
	// kick wakes the device-list publisher after a commit.
	kick chan struct{}
	stop context.CancelFunc
	done chan struct{}
}

func newKeyState() keyState { return keyState{kick: make(chan struct{}, 1)} }

// SetRemoteKeys gives the user API a way to other servers' keys; call it
// before serving requests.
func (s *Service) SetRemoteKeys(r api.RemoteKeys) { s.keys.remote = r }

// StartDeviceListPublisher starts publishing queued device-list updates on
// the bus (api.DeviceListSubject), including any left over from before a
// restart. Updates are written to an outbox in the same transaction as the
// key change they describe, so none is lost if the process dies before
// publishing; each is published with a message ID, so publishing one
// twice stores it once.
func (s *Service) StartDeviceListPublisher(ctx context.Context, b *bus.Bus) error {
	if err := b.EnsureStream(ctx, api.DeviceListStream, api.DeviceListSubject); err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(context.Background())
	s.keys.stop = cancel
	s.keys.done = make(chan struct{})
	go func() {
		defer close(s.keys.done)
		t := time.NewTicker(publishRetryInterval)
		defer t.Stop()
		for {
			s.publishDeviceListUpdates(pctx, b)
			select {
			case <-s.keys.kick:
			case <-t.C:
			case <-pctx.Done():
				return
			}
		}
	}()
	return nil
}

// Close stops the device-list publisher; what it has not published stays
// queued for the next start.
func (s *Service) Close() {
	if s.keys.stop != nil {
		s.keys.stop()
		<-s.keys.done
	}
}

func (s *Service) publishDeviceListUpdates(ctx context.Context, b *bus.Bus) {
	for ctx.Err() == nil {
		pending, err := s.store.PendingDeviceListUpdates(ctx, publishBatch)
		if err != nil {
			if ctx.Err() == nil {
				logrus.WithError(err).Warn("read device-list outbox")
			}
			return
		}
		for _, e := range pending {
			msgID := fmt.Sprintf("%s/%d", e.UserID, e.StreamID)
			if err := b.Publish(ctx, api.DeviceListSubject, e.Payload, msgID); err != nil {
				if ctx.Err() == nil {
					logrus.WithError(err).Warn("publish device-list update; will retry")
				}
				return
			}
			if err := s.store.DeleteDeviceListUpdate(ctx, e.Seq); err != nil {
				logrus.WithError(err).Warn("delete published device-list update")
				return
			}
		}
		if len(pending) < publishBatch {
			return
		}
	}
}

func (s *Service) kickPublisher() {
	select {
	case s.keys.kick <- struct{}{}:
	default:
	}
}

// devicesRemoved deletes the keys of the user's devices that no longer
// exist, after any path that deletes devices, and announces them; it also
// drops the user's cached access tokens.
func (s *Service) devicesRemoved(ctx context.Context, userID string, err error) error {
	// The removed devices' tokens stop working now, not when they leave
	// the verified-token cache; their keys are gone too.
	s.tokens.forgetUser(userID)
	s.keyCounts.forgetUser(userID)
	if err != nil {
		return err
	}
	removed, err := s.store.DeleteKeysOfRemovedDevices(ctx, userID)
	if err != nil {
		return err
	}
	if len(removed) > 0 {
		s.kickPublisher()
	}
	return nil
}

// splitKeyID splits "algorithm:id" (client-server spec §"Key algorithms").
func splitKeyID(keyID string) (algorithm, id string, err error) {
	algorithm, id, ok := strings.Cut(keyID, ":")
	if !ok || algorithm == "" || id == "" || len(keyID) > maxKeyIDLength || strings.ContainsAny(keyID, " \t\r\n") {
		return "", "", api.NewKeyError("M_INVALID_PARAM", "Malformed key ID %q: want <algorithm>:<id>", keyID)
	}
	return algorithm, id, nil
}

// decodeEd25519 decodes an unpadded base64 ed25519 public key.
func decodeEd25519(s string) (ed25519.PublicKey, bool) {
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, false
		}
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(b), true
}

// canonicalWithout returns obj as canonical JSON without the given
// top-level fields.
func canonicalWithout(obj json.RawMessage, fields ...string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil || m == nil {
		return nil, api.NewKeyError("M_BAD_JSON", "Key must be a JSON object")
	}
	for _, f := range fields {
		delete(m, f)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(b)
}

// sameSignedContent says whether two signed objects are the same apart
// from signatures and unsigned data.
func sameSignedContent(a, b json.RawMessage) bool {
	x, err1 := canonicalWithout(a, "signatures", "unsigned")
	y, err2 := canonicalWithout(b, "signatures", "unsigned")
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// verifySignature checks signer's signature with keyID ("ed25519:...").
func verifySignature(signer, keyID string, pub ed25519.PublicKey, obj json.RawMessage) error {
	if err := gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), pub, obj); err != nil {
		return api.NewKeyError("M_INVALID_SIGNATURE", "Invalid signature %s of %s: %v", keyID, signer, err)
	}
	return nil
}

// deviceKeysJSON is the DeviceKeys object (client-server spec §"POST
// /_matrix/client/v3/keys/upload").
type deviceKeysJSON struct {
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Algorithms []string          `json:"algorithms"`
	Keys       map[string]string `json:"keys"`
}

// checkDeviceKeys validates a device's identity keys: they belong to the
// uploading device, name their keys "algorithm:device_id", and are signed
// by the device's own ed25519 key. It returns what to store and that key.
func checkDeviceKeys(userID, deviceID string, raw json.RawMessage) ([]byte, ed25519.PublicKey, error) {
	var dk deviceKeysJSON
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, nil, api.NewKeyError("M_BAD_JSON", "Malformed device_keys: %v", err)
	}
	if dk.UserID != userID || dk.DeviceID != deviceID {
		return nil, nil, api.NewKeyError("M_INVALID_PARAM", "device_keys must be for %s device %s", userID, deviceID)
	}
	if len(dk.Algorithms) == 0 || len(dk.Keys) == 0 {
		return nil, nil, api.NewKeyError("M_BAD_JSON", "device_keys needs algorithms and keys")
	}
	for kid, v := range dk.Keys {
		_, id, err := splitKeyID(kid)
		if err != nil {
			return nil, nil, err
		}
		if id != deviceID || v == "" {
			return nil, nil, api.NewKeyError("M_INVALID_PARAM", "Device key %q must be named <algorithm>:%s and not empty", kid, deviceID)
		}
	}
	pub, ok := decodeEd25519(dk.Keys["ed25519:"+deviceID])
	if !ok {
		return nil, nil, api.NewKeyError("M_INVALID_PARAM", "device_keys needs a valid ed25519:%s key", deviceID)
	}
	if err := verifySignature(userID, "ed25519:"+deviceID, pub, raw); err != nil {
		return nil, nil, err
	}
	stored, err := canonicalWithout(raw, "unsigned")
	if err != nil {
		return nil, nil, err
	}
	return stored, pub, nil
}

// checkOneTimeKey validates a one-time or fallback key: a plain key
// string, or a key object signed by the device (required for "signed_"
// algorithms).
func checkOneTimeKey(userID, deviceID string, devKey ed25519.PublicKey, keyID string, raw json.RawMessage) (storage.OneTimeKey, error) {
	alg, _, err := splitKeyID(keyID)
	if err != nil {
		return storage.OneTimeKey{}, err
	}
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var k string
		if json.Unmarshal(raw, &k) != nil || k == "" {
			return storage.OneTimeKey{}, api.NewKeyError("M_BAD_JSON", "Malformed key %s", keyID)
		}
		if strings.HasPrefix(alg, "signed_") {
			return storage.OneTimeKey{}, api.NewKeyError("M_INVALID_SIGNATURE", "Key %s must be a signed key object", keyID)
		}
		return storage.OneTimeKey{Algorithm: alg, KeyID: keyID, JSON: raw}, nil
	case len(raw) > 0 && raw[0] == '{':
		var k struct {
			Key string `json:"key"`
		}
		if json.Unmarshal(raw, &k) != nil || k.Key == "" {
			return storage.OneTimeKey{}, api.NewKeyError("M_BAD_JSON", "Key %s needs a \"key\"", keyID)
		}
		if devKey == nil {
			return storage.OneTimeKey{}, api.NewKeyError("M_INVALID_SIGNATURE", "Cannot check the signature of %s: upload device_keys first", keyID)
		}
		if err := verifySignature(userID, "ed25519:"+deviceID, devKey, raw); err != nil {
			return storage.OneTimeKey{}, err
		}
		js, err := canonicalWithout(raw, "unsigned")
		if err != nil {
			return storage.OneTimeKey{}, err
		}
		return storage.OneTimeKey{Algorithm: alg, KeyID: keyID, JSON: js}, nil
	}
	return storage.OneTimeKey{}, api.NewKeyError("M_BAD_JSON", "Key %s must be a string or an object", keyID)
}

// storedDeviceKey returns the ed25519 key of a device's uploaded keys, or
// nil if it has none.
func (s *Service) storedDeviceKey(ctx context.Context, userID, deviceID string) (ed25519.PublicKey, error) {
	rows, err := s.store.DeviceKeys(ctx, userID, []string{deviceID})
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	var dk deviceKeysJSON
	if err := json.Unmarshal(rows[0].JSON, &dk); err != nil {
		return nil, fmt.Errorf("stored device keys of %s %s: %w", userID, deviceID, err)
	}
	pub, _ := decodeEd25519(dk.Keys["ed25519:"+deviceID])
	return pub, nil
}

// UploadKeys implements api.KeyAPI.
func (s *Service) UploadKeys(ctx context.Context, req *api.UploadKeysRequest) (map[string]int, error) {
	up := storage.KeyUpload{UserID: req.UserID, DeviceID: req.DeviceID}
	var devKey ed25519.PublicKey
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var err error
		if up.DeviceKeys, devKey, err = checkDeviceKeys(req.UserID, req.DeviceID, req.DeviceKeys); err != nil {
			return nil, err
		}
	}
	if devKey == nil && len(req.OneTimeKeys)+len(req.FallbackKeys) > 0 {
		var err error
		if devKey, err = s.storedDeviceKey(ctx, req.UserID, req.DeviceID); err != nil {
			return nil, err
		}
	}
	for _, kid := range sortedKeys(req.OneTimeKeys) {
		k, err := checkOneTimeKey(req.UserID, req.DeviceID, devKey, kid, req.OneTimeKeys[kid])
		if err != nil {
			return nil, err
		}
		up.OneTimeKeys = append(up.OneTimeKeys, k)
	}
	seen := map[string]bool{}
	for _, kid := range sortedKeys(req.FallbackKeys) {
		k, err := checkOneTimeKey(req.UserID, req.DeviceID, devKey, kid, req.FallbackKeys[kid])
		if err != nil {
			return nil, err
		}
		if seen[k.Algorithm] {
			return nil, api.NewKeyError("M_INVALID_PARAM", "At most one fallback key per algorithm")
		}
		seen[k.Algorithm] = true
		up.FallbackKeys = append(up.FallbackKeys, k)
	}
	if up.DeviceKeys != nil || len(up.OneTimeKeys) > 0 || len(up.FallbackKeys) > 0 {
		changed, err := s.store.UploadKeys(ctx, up)
		s.keyCounts.forget([2]string{req.UserID, req.DeviceID})
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return nil, api.ErrNotFound
		case errors.Is(err, storage.ErrKeyConflict):
			return nil, api.NewKeyError("M_INVALID_PARAM", "%v", err)
		case err != nil:
			return nil, err
		}
		if changed {
			s.kickPublisher()
		}
	}
	counts, _, err := s.store.OneTimeKeyCounts(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return nil, err
	}
	// Clients read the signed_curve25519 count to decide whether to
	// upload more; an absent count means zero.
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	return counts, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// OneTimeKeyCounts implements api.KeyAPI. Every /sync of a device asks,
// so answers are cached (tokencache.go).
func (s *Service) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (*api.OneTimeKeyCounts, error) {
	k, now := [2]string{userID, deviceID}, s.now()
	c, ok := s.keyCounts.get(k, now)
	if !ok {
		epoch := s.keyCounts.begin()
		counts, fallback, err := s.store.OneTimeKeyCounts(ctx, userID, deviceID)
		if err != nil {
			return nil, err
		}
		if _, ok := counts["signed_curve25519"]; !ok {
			counts["signed_curve25519"] = 0
		}
		c = api.OneTimeKeyCounts{Counts: counts, UnusedFallbackAlgorithms: fallback}
		s.keyCounts.put(epoch, k, userID, c, now)
	}
	return &api.OneTimeKeyCounts{Counts: maps.Clone(c.Counts), UnusedFallbackAlgorithms: slices.Clone(c.UnusedFallbackAlgorithms)}, nil
}

func remoteTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return defaultRemoteKeyTimeout
	}
	return min(d, maxRemoteKeyTimeout)
}

// remoteFailure is the failures entry for a server that could not answer.
func remoteFailure(msg string) map[string]any {
	return map[string]any{"status": 503, "message": msg}
}

// QueryKeys implements api.KeyAPI.
func (s *Service) QueryKeys(ctx context.Context, req *api.QueryKeysRequest) (*api.QueryKeysResponse, error) {
	resp := &api.QueryKeysResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
		Failures:        map[string]any{},
	}
	remote := map[string]map[string][]string{}
	for _, userID := range sortedKeys(req.DeviceKeys) {
		_, server, err := api.ParseUserID(userID)
		if err != nil {
			continue
		}
		if server != s.cfg.ServerName {
			if remote[server] == nil {
				remote[server] = map[string][]string{}
			}
			remote[server][userID] = req.DeviceKeys[userID]
			continue
		}
		if err := s.queryLocalKeys(ctx, req.RequesterUserID, userID, req.DeviceKeys[userID], resp); err != nil {
			return nil, err
		}
	}
	if len(remote) == 0 {
		return resp, nil
	}
	if s.keys.remote == nil {
		for server := range remote {
			resp.Failures[server] = remoteFailure("Federation is not available")
		}
		return resp, nil
	}
	rctx, cancel := context.WithTimeout(ctx, remoteTimeout(req.Timeout))
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, users := range remote {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.keys.remote.QueryRemoteKeys(rctx, server, users)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				resp.Failures[server] = remoteFailure(err.Error())
				return
			}
			// Only what the server says about its own users is taken.
			for u, devs := range r.DeviceKeys {
				if _, ok := users[u]; ok {
					resp.DeviceKeys[u] = devs
				}
			}
			for u, k := range r.MasterKeys {
				if _, ok := users[u]; ok {
					resp.MasterKeys[u] = k
				}
			}
			for u, k := range r.SelfSigningKeys {
				if _, ok := users[u]; ok {
					resp.SelfSigningKeys[u] = k
				}
			}
		}()
	}
	wg.Wait()
	return resp, nil
}

// queryLocalKeys adds a local user's keys to resp. Signatures stored apart
// are shown when the signer is the key's owner or the requester (spec
// §"Cross-signing": signatures of others' master keys by a user-signing
// key are visible to the signer only, not to leak the social graph).
func (s *Service) queryLocalKeys(ctx context.Context, requester, userID string, deviceIDs []string, resp *api.QueryKeysResponse) error {
	all, err := s.store.Signatures(ctx, userID)
	if err != nil {
		return err
	}
	sigs := map[string][]storage.Signature{}
	for _, sig := range all {
		if sig.SignerUserID == userID || (requester != "" && sig.SignerUserID == requester) {
			sigs[sig.TargetKeyID] = append(sigs[sig.TargetKeyID], sig)
		}
	}
	rows, err := s.store.DeviceKeys(ctx, userID, deviceIDs)
	if err != nil {
		return err
	}
	devs := map[string]json.RawMessage{}
	for _, r := range rows {
		merged, err := storage.MergeSignatures(r.JSON, sigs[r.DeviceID])
		if err != nil {
			return err
		}
		if r.DisplayName != "" {
			if merged, err = withUnsigned(merged, map[string]any{"device_display_name": r.DisplayName}); err != nil {
				return err
			}
		}
		devs[r.DeviceID] = merged
	}
	resp.DeviceKeys[userID] = devs
	cs, err := s.store.CrossSigningKeys(ctx, userID)
	if err != nil {
		return err
	}
	for typ, k := range cs {
		merged, err := storage.MergeSignatures(k.JSON, sigs[k.PublicKey])
		if err != nil {
			return err
		}
		switch typ {
		case storage.MasterKey:
			resp.MasterKeys[userID] = merged
		case storage.SelfSigningKey:
			resp.SelfSigningKeys[userID] = merged
		case storage.UserSigningKey:
			if requester == userID {
				resp.UserSigningKeys[userID] = merged
			}
		}
	}
	return nil
}

func withUnsigned(obj json.RawMessage, unsigned map[string]any) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, err
	}
	b, err := json.Marshal(unsigned)
	if err != nil {
		return nil, err
	}
	m["unsigned"] = b
	return json.Marshal(m)
}

// ClaimKeys implements api.KeyAPI.
func (s *Service) ClaimKeys(ctx context.Context, req *api.ClaimKeysRequest) (*api.ClaimKeysResponse, error) {
	resp := &api.ClaimKeysResponse{
		OneTimeKeys: map[string]map[string]map[string]json.RawMessage{},
		Failures:    map[string]any{},
	}
	remote := map[string]map[string]map[string]string{}
	for _, userID := range sortedKeys(req.OneTimeKeys) {
		_, server, err := api.ParseUserID(userID)
		if err != nil {
			continue
		}
		devices := req.OneTimeKeys[userID]
		if server != s.cfg.ServerName {
			if remote[server] == nil {
				remote[server] = map[string]map[string]string{}
			}
			remote[server][userID] = devices
			continue
		}
		for _, deviceID := range sortedKeys(devices) {
			alg := devices[deviceID]
			if alg == "" || strings.Contains(alg, ":") {
				continue
			}
			keyID, js, ok, err := s.store.ClaimKey(ctx, userID, deviceID, alg)
			s.keyCounts.forget([2]string{userID, deviceID})
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			if resp.OneTimeKeys[userID] == nil {
				resp.OneTimeKeys[userID] = map[string]map[string]json.RawMessage{}
			}
			resp.OneTimeKeys[userID][deviceID] = map[string]json.RawMessage{keyID: js}
		}
	}
	if len(remote) == 0 {
		return resp, nil
	}
	if s.keys.remote == nil {
		for server := range remote {
			resp.Failures[server] = remoteFailure("Federation is not available")
		}
		return resp, nil
	}
	rctx, cancel := context.WithTimeout(ctx, remoteTimeout(req.Timeout))
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, users := range remote {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys, err := s.keys.remote.ClaimRemoteKeys(rctx, server, users)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				resp.Failures[server] = remoteFailure(err.Error())
				return
			}
			for u, devs := range keys {
				if _, ok := users[u]; ok {
					resp.OneTimeKeys[u] = devs
				}
			}
		}()
	}
	wg.Wait()
	return resp, nil
}

// crossSigningKeyJSON is a CrossSigningKey object.
type crossSigningKeyJSON struct {
	UserID string            `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// checkCrossSigningKey validates the shape of a cross-signing key of
// userID with the given usage and returns its public key and what to
// store.
func checkCrossSigningKey(userID, usage string, raw json.RawMessage) (storage.CrossSigningKey, ed25519.PublicKey, error) {
	var k crossSigningKeyJSON
	if err := json.Unmarshal(raw, &k); err != nil {
		return storage.CrossSigningKey{}, nil, api.NewKeyError("M_BAD_JSON", "Malformed %s key: %v", usage, err)
	}
	if k.UserID != userID {
		return storage.CrossSigningKey{}, nil, api.NewKeyError("M_INVALID_PARAM", "The %s key must belong to %s", usage, userID)
	}
	if !slices.Contains(k.Usage, usage) {
		return storage.CrossSigningKey{}, nil, api.NewKeyError("M_INVALID_PARAM", "The %s key must have usage %q", usage, usage)
	}
	if len(k.Keys) != 1 {
		return storage.CrossSigningKey{}, nil, api.NewKeyError("M_INVALID_PARAM", "The %s key must hold exactly one key", usage)
	}
	var pubB64 string
	for kid, v := range k.Keys {
		alg, id, err := splitKeyID(kid)
		if err != nil {
			return storage.CrossSigningKey{}, nil, err
		}
		if alg != "ed25519" || id != v {
			return storage.CrossSigningKey{}, nil, api.NewKeyError("M_INVALID_PARAM", "The %s key must be named ed25519:<public key>", usage)
		}
		pubB64 = v
	}
	pub, ok := decodeEd25519(pubB64)
	if !ok {
		return storage.CrossSigningKey{}, nil, api.NewKeyError("M_INVALID_PARAM", "The %s key is not an ed25519 public key", usage)
	}
	js, err := canonicalWithout(raw, "unsigned")
	if err != nil {
		return storage.CrossSigningKey{}, nil, err
	}
	return storage.CrossSigningKey{PublicKey: pubB64, JSON: js}, pub, nil
}

// CrossSigningKeys implements api.KeyAPI.
func (s *Service) CrossSigningKeys(ctx context.Context, userID string) (*api.CrossSigningKeySet, error) {
	cs, err := s.store.CrossSigningKeys(ctx, userID)
	if err != nil {
		return nil, err
	}
	set := &api.CrossSigningKeySet{}
	if k, ok := cs[storage.MasterKey]; ok {
		set.MasterKey = k.JSON
	}
	if k, ok := cs[storage.SelfSigningKey]; ok {
		set.SelfSigningKey = k.JSON
	}
	if k, ok := cs[storage.UserSigningKey]; ok {
		set.UserSigningKey = k.JSON
	}
	return set, nil
}

// UploadCrossSigningKeys implements api.KeyAPI. The self-signing and
// user-signing keys must be signed by the master key (the new one, or the
// stored one when no new master key is given). A new master key makes the
// old self-signing and user-signing keys invalid: they are removed unless
// replaced in the same upload.
func (s *Service) UploadCrossSigningKeys(ctx context.Context, userID string, set api.CrossSigningKeySet) error {
	existing, err := s.store.CrossSigningKeys(ctx, userID)
	if err != nil {
		return err
	}
	keys := map[string]storage.CrossSigningKey{}
	var masterPub ed25519.PublicKey
	var masterB64 string
	if len(set.MasterKey) > 0 {
		k, pub, err := checkCrossSigningKey(userID, storage.MasterKey, set.MasterKey)
		if err != nil {
			return err
		}
		keys[storage.MasterKey], masterPub, masterB64 = k, pub, k.PublicKey
	} else if m, ok := existing[storage.MasterKey]; ok {
		masterB64 = m.PublicKey
		masterPub, _ = decodeEd25519(m.PublicKey)
	}
	for _, sub := range []struct {
		typ string
		raw json.RawMessage
	}{{storage.SelfSigningKey, set.SelfSigningKey}, {storage.UserSigningKey, set.UserSigningKey}} {
		if len(sub.raw) == 0 {
			continue
		}
		if masterPub == nil {
			return api.NewKeyError("M_MISSING_PARAM", "Upload a master key before the %s key", sub.typ)
		}
		k, _, err := checkCrossSigningKey(userID, sub.typ, sub.raw)
		if err != nil {
			return err
		}
		if err := verifySignature(userID, "ed25519:"+masterB64, masterPub, sub.raw); err != nil {
			return err
		}
		keys[sub.typ] = k
	}
	if len(keys) == 0 {
		return nil
	}
	// Spec: device IDs must not collide with cross-signing public keys,
	// which clients may treat as device IDs when verifying.
	for _, k := range keys {
		if _, err := s.store.GetDevice(ctx, userID, k.PublicKey); err == nil {
			return api.NewKeyError("M_INVALID_PARAM", "A device of this user has the ID %s", k.PublicKey)
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
	}
	var drop []string
	if old, ok := existing[storage.MasterKey]; ok && keys[storage.MasterKey].PublicKey != "" && old.PublicKey != masterB64 {
		for _, typ := range []string{storage.SelfSigningKey, storage.UserSigningKey} {
			if _, replaced := keys[typ]; !replaced {
				drop = append(drop, typ)
			}
		}
	}
	if err := s.store.SetCrossSigningKeys(ctx, userID, keys, drop); err != nil {
		return err
	}
	s.kickPublisher()
	return nil
}

// signaturesBy returns the signatures signer made in a signed object.
func signaturesBy(signer string, raw json.RawMessage) (map[string]string, error) {
	var obj struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, api.NewKeyError("M_BAD_JSON", "Malformed signed object: %v", err)
	}
	if len(obj.Signatures[signer]) == 0 {
		return nil, api.NewKeyError("M_INVALID_SIGNATURE", "No signature by %s", signer)
	}
	return obj.Signatures[signer], nil
}

// UploadSignatures implements api.KeyAPI (client-server spec §"POST
// /_matrix/client/v3/keys/signatures/upload").
func (s *Service) UploadSignatures(ctx context.Context, userID string, signed map[string]map[string]json.RawMessage) (map[string]map[string]*api.KeyError, error) {
	failures := map[string]map[string]*api.KeyError{}
	fail := func(user, key string, err error) error {
		var ke *api.KeyError
		if !errors.As(err, &ke) {
			return err
		}
		if failures[user] == nil {
			failures[user] = map[string]*api.KeyError{}
		}
		failures[user][key] = ke
		return nil
	}
	own, err := s.store.CrossSigningKeys(ctx, userID)
	if err != nil {
		return nil, err
	}
	var accepted []storage.Signature
	for _, target := range sortedKeys(signed) {
		for _, keyID := range sortedKeys(signed[target]) {
			sigs, err := s.checkUploadedSignature(ctx, userID, own, target, keyID, signed[target][keyID])
			if err != nil {
				if err := fail(target, keyID, err); err != nil {
					return nil, err
				}
				continue
			}
			accepted = append(accepted, sigs...)
		}
	}
	if len(accepted) > 0 {
		if err := s.store.AddSignatures(ctx, accepted); err != nil {
			return nil, err
		}
		s.kickPublisher()
	}
	return failures, nil
}

// checkUploadedSignature checks one signed object of a signatures upload
// and returns the signatures to store. Problems are *api.KeyError.
func (s *Service) checkUploadedSignature(ctx context.Context, userID string, own map[string]storage.CrossSigningKey,
	target, keyID string, raw json.RawMessage) ([]storage.Signature, error) {
	by, err := signaturesBy(userID, raw)
	if err != nil {
		return nil, err
	}
	signature := func(signerKeyID string) storage.Signature {
		return storage.Signature{TargetUserID: target, TargetKeyID: keyID, SignerUserID: userID, SignerKeyID: signerKeyID, Signature: by[signerKeyID]}
	}
	// signedBy checks the signature of one of the signer's own keys.
	signedBy := func(kind string, k storage.CrossSigningKey, ok bool) ([]storage.Signature, error) {
		if !ok {
			return nil, api.NewKeyError("M_INVALID_SIGNATURE", "You have no %s key", kind)
		}
		kid := "ed25519:" + k.PublicKey
		if _, ok := by[kid]; !ok {
			return nil, api.NewKeyError("M_INVALID_SIGNATURE", "No signature by your %s key %s", kind, kid)
		}
		pub, _ := decodeEd25519(k.PublicKey)
		if err := verifySignature(userID, kid, pub, raw); err != nil {
			return nil, err
		}
		return []storage.Signature{signature(kid)}, nil
	}

	if target != userID {
		// Another user's master key, signed with the user-signing key.
		if _, err := api.LocalUserID(target, s.cfg.ServerName); err != nil {
			return nil, api.NewKeyError("M_NOT_FOUND", "Keys of users on other servers cannot be signed here yet")
		}
		theirs, err := s.store.CrossSigningKeys(ctx, target)
		if err != nil {
			return nil, err
		}
		m, ok := theirs[storage.MasterKey]
		if !ok || m.PublicKey != keyID {
			return nil, api.NewKeyError("M_NOT_FOUND", "%s is not the master key of %s", keyID, target)
		}
		if !sameSignedContent(m.JSON, raw) {
			return nil, api.NewKeyError("M_INVALID_SIGNATURE", "The signed object differs from the stored master key")
		}
		k, ok := own[storage.UserSigningKey]
		return signedBy("user-signing", k, ok)
	}

	if m, ok := own[storage.MasterKey]; ok && m.PublicKey == keyID {
		// One's own master key, signed by one's own devices.
		if !sameSignedContent(m.JSON, raw) {
			return nil, api.NewKeyError("M_INVALID_SIGNATURE", "The signed object differs from the stored master key")
		}
		var out []storage.Signature
		for _, kid := range sortedKeys(by) {
			alg, deviceID, err := splitKeyID(kid)
			if err != nil || alg != "ed25519" || deviceID == keyID {
				continue
			}
			pub, err := s.storedDeviceKey(ctx, userID, deviceID)
			if err != nil {
				return nil, err
			}
			if pub == nil {
				return nil, api.NewKeyError("M_INVALID_SIGNATURE", "Unknown signing device %s", deviceID)
			}
			if err := verifySignature(userID, kid, pub, raw); err != nil {
				return nil, err
			}
			out = append(out, signature(kid))
		}
		if len(out) == 0 {
			return nil, api.NewKeyError("M_INVALID_SIGNATURE", "No device signature of the master key")
		}
		return out, nil
	}

	// One's own device, signed with the self-signing key.
	rows, err := s.store.DeviceKeys(ctx, userID, []string{keyID})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, api.NewKeyError("M_NOT_FOUND", "Unknown device or key %s", keyID)
	}
	if !sameSignedContent(rows[0].JSON, raw) {
		return nil, api.NewKeyError("M_INVALID_SIGNATURE", "The signed object differs from the stored device keys")
	}
	k, ok := own[storage.SelfSigningKey]
	return signedBy("self-signing", k, ok)
}
