package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/federation/storage"
	"github.com/parley-chat/parley/internal/signingkey"
)

// keyValidity is how long our published key response says it is valid
// (server-server spec §"Publishing Keys": valid_until_ts); receivers cap it
// at seven days anyway (room versions ≥ 5).
const keyValidity = 7 * 24 * time.Hour

// keyFetchTimeout bounds one fetch of a server's keys, direct or via a notary.
const keyFetchTimeout = 15 * time.Second

// maxParallelKeyFetches bounds the servers asked at once by one lookup.
const maxParallelKeyFetches = 8

// KeyClient is what key fetching needs from the federation client.
type KeyClient interface {
	GetServerKeys(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error)
	LookupServerKeys(ctx context.Context, notary spec.ServerName, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error)
}

// Keys is this server's view of signing keys: its own (published at
// /_matrix/key/v2/server) and other servers' (fetched directly or through
// notaries, checked, and cached in the federation_server_keys table).
type Keys struct {
	serverName spec.ServerName
	own        *signingkey.Set
	db         *storage.Database
	client     KeyClient
	// started stands in for the retirement time of an old key whose file
	// line carries none.
	started time.Time

	ring   *gomatrixserverlib.KeyRing // cache, direct, then each notary
	direct *gomatrixserverlib.KeyRing // cache, direct: checks notaries' own signatures
}

// NewKeys builds the key ring. Notaries are asked, in order, for keys that
// could not be fetched from their server directly.
func NewKeys(serverName spec.ServerName, own *signingkey.Set, db *storage.Database, client KeyClient, notaries []spec.ServerName) *Keys {
	k := &Keys{serverName: serverName, own: own, db: db, client: client, started: time.Now()}
	direct := &directFetcher{k: k}
	k.direct = &gomatrixserverlib.KeyRing{KeyDatabase: db, KeyFetchers: []gomatrixserverlib.KeyFetcher{direct}}
	fetchers := []gomatrixserverlib.KeyFetcher{direct}
	for _, n := range notaries {
		if n != serverName {
			fetchers = append(fetchers, &notaryFetcher{k: k, notary: n})
		}
	}
	k.ring = &gomatrixserverlib.KeyRing{KeyDatabase: db, KeyFetchers: fetchers}
	return k
}

// KeyRing verifies JSON signed by any server, fetching and caching keys
// as needed; use it for requests, events and key responses.
func (k *Keys) KeyRing() *gomatrixserverlib.KeyRing { return k.ring }

// OwnKeyResponse is this server's key response (server-server spec
// §"Publishing Keys"), signed with the current key: the current key in
// verify_keys, retired ones in old_verify_keys with their expired_ts.
func (k *Keys) OwnKeyResponse(now time.Time) ([]byte, error) {
	var fields gomatrixserverlib.ServerKeyFields
	fields.ServerName = k.serverName
	fields.ValidUntilTS = spec.AsTimestamp(now.Add(keyValidity))
	fields.VerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
		gomatrixserverlib.KeyID(k.own.Current.ID): {Key: spec.Base64Bytes(k.own.Current.PrivateKey.Public().(ed25519.PublicKey))},
	}
	fields.OldVerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	for _, old := range k.own.Old {
		fields.OldVerifyKeys[gomatrixserverlib.KeyID(old.ID)] = gomatrixserverlib.OldVerifyKey{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(old.PrivateKey.Public().(ed25519.PublicKey))},
			ExpiredTS: spec.AsTimestamp(k.expiredAt(old)),
		}
	}
	unsigned, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return k.sign(unsigned)
}

func (k *Keys) expiredAt(old signingkey.Key) time.Time {
	if old.ExpiredAt.IsZero() {
		return k.started
	}
	return old.ExpiredAt
}

// sign adds this server's signature, keeping those already there.
func (k *Keys) sign(message []byte) ([]byte, error) {
	return gomatrixserverlib.SignJSON(string(k.serverName), gomatrixserverlib.KeyID(k.own.Current.ID), k.own.Current.PrivateKey, message)
}

// localKeys answers a lookup of this server's own keys from the key file.
func (k *Keys) localKeys(now time.Time) map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult {
	out := map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult{
		gomatrixserverlib.KeyID(k.own.Current.ID): {
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.own.Current.PrivateKey.Public().(ed25519.PublicKey))},
			ValidUntilTS: spec.AsTimestamp(now.Add(keyValidity)),
		},
	}
	for _, old := range k.own.Old {
		out[gomatrixserverlib.KeyID(old.ID)] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(old.PrivateKey.Public().(ed25519.PublicKey))},
			ExpiredTS: spec.AsTimestamp(k.expiredAt(old)),
		}
	}
	return out
}

// checkServerKeys accepts a key response only if it is for the server
// asked about and self-signed by every ed25519 key it lists. Validity is
// not checked here: expired keys still verify old events, and the KeyRing
// checks valid_until_ts against each signature's time.
func checkServerKeys(server spec.ServerName, keys gomatrixserverlib.ServerKeys) error {
	checks, _ := gomatrixserverlib.CheckKeys(server, time.Unix(0, 0), keys)
	if !checks.AllChecksOK {
		return fmt.Errorf("key response for %s failed checks (server name matches: %v, has ed25519 key: %v, self-signed: %v)",
			server, checks.MatchingServerName, checks.HasEd25519Key, checks.AllEd25519ChecksOK != nil && *checks.AllEd25519ChecksOK)
	}
	return nil
}

// fetchDirect asks a server for its keys, checks and caches the response.
func (k *Keys) fetchDirect(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	keys, err := k.client.GetServerKeys(ctx, server)
	if err != nil {
		return keys, fmt.Errorf("fetch keys of %s: %w", server, err)
	}
	if err := checkServerKeys(server, keys); err != nil {
		return keys, err
	}
	if err := k.db.StoreKeyResponse(ctx, server, keys.Raw, keys.ValidUntilTS); err != nil {
		return keys, err
	}
	return keys, nil
}

// lookupResults turns a checked key response into KeyRing results.
func lookupResults(keys gomatrixserverlib.ServerKeys, into map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) {
	for id, v := range keys.VerifyKeys {
		into[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] =
			gomatrixserverlib.PublicKeyLookupResult{VerifyKey: v, ValidUntilTS: keys.ValidUntilTS}
	}
	for id, v := range keys.OldVerifyKeys {
		into[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] =
			gomatrixserverlib.PublicKeyLookupResult{VerifyKey: v.VerifyKey, ExpiredTS: v.ExpiredTS}
	}
}

// parallel runs fn for each server, a few at a time.
func parallel(servers []spec.ServerName, fn func(spec.ServerName)) {
	sem := make(chan struct{}, maxParallelKeyFetches)
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(s)
		}()
	}
	wg.Wait()
}

// directFetcher asks each server for its own keys (GET /_matrix/key/v2/server).
type directFetcher struct{ k *Keys }

func (f *directFetcher) FetcherName() string { return "direct" }

func (f *directFetcher) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	results := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	var remote []spec.ServerName
	seen := map[spec.ServerName]bool{}
	for req := range requests {
		if req.ServerName == f.k.serverName {
			if res, ok := f.k.localKeys(time.Now())[req.KeyID]; ok {
				results[req] = res
			}
			continue
		}
		if !seen[req.ServerName] {
			seen[req.ServerName] = true
			remote = append(remote, req.ServerName)
		}
	}
	var mu sync.Mutex
	parallel(remote, func(s spec.ServerName) {
		keys, err := f.k.fetchDirect(ctx, s)
		if err != nil {
			logrus.WithError(err).WithField("server", s).Debug("direct key fetch failed")
			return
		}
		mu.Lock()
		lookupResults(keys, results)
		mu.Unlock()
	})
	return results, nil
}

// notaryFetcher asks a notary server (POST /_matrix/key/v2/query). The
// notary's answer counts only if the notary signed it with a key we
// fetched from the notary itself, and each server's response in it is
// still self-signed by that server.
type notaryFetcher struct {
	k      *Keys
	notary spec.ServerName
}

func (f *notaryFetcher) FetcherName() string { return "notary " + string(f.notary) }

func (f *notaryFetcher) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	asked := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	servers := map[spec.ServerName]bool{}
	for req, ts := range requests {
		if req.ServerName != f.k.serverName && req.ServerName != f.notary {
			asked[req] = ts
			servers[req.ServerName] = true
		}
	}
	if len(asked) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	responses, err := f.k.client.LookupServerKeys(ctx, f.notary, asked)
	if err != nil {
		return nil, fmt.Errorf("query notary %s: %w", f.notary, err)
	}
	results := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for _, keys := range responses {
		if !servers[keys.ServerName] {
			continue
		}
		verified, err := f.k.direct.VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
			ServerName: f.notary, AtTS: spec.AsTimestamp(time.Now()), Message: keys.Raw,
			ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
		}})
		if err != nil {
			return nil, err
		}
		if verified[0].Error != nil {
			return nil, fmt.Errorf("notary %s: response for %s not signed by the notary: %w", f.notary, keys.ServerName, verified[0].Error)
		}
		if err := checkServerKeys(keys.ServerName, keys); err != nil {
			logrus.WithError(err).WithField("notary", f.notary).Warn("notary returned a bad key response")
			continue
		}
		if err := f.k.db.StoreKeyResponse(ctx, keys.ServerName, keys.Raw, keys.ValidUntilTS); err != nil {
			return nil, err
		}
		lookupResults(keys, results)
	}
	return results, nil
}

// maxNotaryServers bounds the servers one notary query may ask about.
const maxNotaryServers = 100

// errTooManyServers is returned for a notary query over maxNotaryServers.
var errTooManyServers = errors.New("too many servers in one key query")

// NotaryQuery answers a key query about other servers (server-server spec
// §"Querying Keys Through Another Server"): for each server the cached
// response if it is valid until the asked time and holds the asked key IDs,
// otherwise a fresh one fetched directly, otherwise (the server being
// unreachable) whatever is cached. Each response is returned with the
// server's own signatures and this server's added. Servers with nothing
// to show are left out.
func (k *Keys) NotaryQuery(ctx context.Context, criteria map[spec.ServerName]map[gomatrixserverlib.KeyID]spec.Timestamp) ([]json.RawMessage, error) {
	if len(criteria) > maxNotaryServers {
		return nil, errTooManyServers
	}
	now := time.Now()
	servers := make([]spec.ServerName, 0, len(criteria))
	for s := range criteria {
		servers = append(servers, s)
	}
	var mu sync.Mutex
	var firstErr error
	out := []json.RawMessage{}
	parallel(servers, func(s spec.ServerName) {
		raw, err := k.notaryResponse(ctx, s, criteria[s], now)
		if err == nil && raw != nil && s != k.serverName {
			raw, err = k.sign(raw)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		if raw != nil {
			out = append(out, raw)
		}
	})
	return out, firstErr
}

func (k *Keys) notaryResponse(ctx context.Context, server spec.ServerName, keyIDs map[gomatrixserverlib.KeyID]spec.Timestamp, now time.Time) ([]byte, error) {
	if server == k.serverName {
		return k.OwnKeyResponse(now)
	}
	if _, _, ok := spec.ParseAndValidateServerName(server); !ok {
		return nil, nil
	}
	need := spec.AsTimestamp(now)
	for _, ts := range keyIDs {
		need = max(need, ts)
	}
	cached, until, err := k.db.KeyResponse(ctx, server)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if cached != nil && until >= need && holdsKeys(cached, keyIDs) {
		return cached, nil
	}
	fresh, err := k.fetchDirect(ctx, server)
	if err == nil {
		return fresh.Raw, nil
	}
	logrus.WithError(err).WithField("server", server).Debug("notary: could not refresh keys; answering from cache")
	return cached, nil
}

// holdsKeys says whether a key response lists every asked key ID; the
// empty key ID carries a validity time for the response as a whole.
func holdsKeys(raw []byte, keyIDs map[gomatrixserverlib.KeyID]spec.Timestamp) bool {
	var keys gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(raw, &keys); err != nil {
		return false
	}
	for id := range keyIDs {
		if id == "" {
			continue
		}
		_, cur := keys.VerifyKeys[id]
		_, old := keys.OldVerifyKeys[id]
		if !cur && !old {
			return false
		}
	}
	return true
}
