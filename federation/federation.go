// Package federation is Parley's server-server API (spec v1.12): the
// key endpoints (/_matrix/key/v2), this server's keys and a cache of other
// servers' keys, X-Matrix request signing and verification, the inbound
// /_matrix/federation routes, and (package sender) the outbound
// per-destination queues fed by the roomserver output stream.
package federation

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/federation/sender"
	"github.com/parley-chat/parley/federation/storage"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/signingkey"
	"github.com/parley-chat/parley/internal/sqlutil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Deps are what the federation component needs.
type Deps struct {
	Config *config.Config
	Keys   *signingkey.Set
	DB     *sqlutil.DB
	Bus    *bus.Bus
	Rooms  rsapi.FederationRoomserverAPI
	Users  userapi.UserAPI
	// Version is the software version reported by /version.
	Version string
	// SenderOptions tune the outbound queues; zero values are the defaults.
	SenderOptions sender.Options
}

// Service is the running federation component.
type Service struct {
	cfg        *config.Config
	serverName spec.ServerName
	version    string
	db         *storage.Database
	keys       *Keys
	client     *Client
	sender     *sender.Sender
	rooms      rsapi.FederationRoomserverAPI
	users      userapi.UserAPI
	stop       chan struct{}
	// The current signing key, for events this server signs (joins,
	// leaves, invites) and countersigns (send_join, /invite).
	keyID      gomatrixserverlib.KeyID
	privateKey ed25519.PrivateKey
	// templateKey signs nothing that leaves this server: make_join and
	// make_leave build the template event once to check it against the
	// auth rules, and building needs a key.
	templateKey ed25519.PrivateKey
	// edus handles ephemeral data and device lists (edu_*.go).
	edus *eduState
}

// Open starts the federation component: storage, client, key ring, and
// the outbound sender consuming the roomserver output stream.
func Open(ctx context.Context, d Deps) (*Service, error) {
	db, err := storage.Open(ctx, d.DB)
	if err != nil {
		return nil, fmt.Errorf("federation storage: %w", err)
	}
	name := spec.ServerName(d.Config.ServerName)
	client, err := NewClient(ClientOptions{
		ServerName:         name,
		Keys:               d.Keys,
		TrustedCAFile:      d.Config.Federation.TrustedCAFile,
		InsecureSkipVerify: d.Config.Federation.InsecureSkipVerify,
		Version:            d.Version,
	})
	if err != nil {
		return nil, err
	}
	notaries := make([]spec.ServerName, 0, len(d.Config.Federation.NotaryServers))
	for _, n := range d.Config.Federation.NotaryServers {
		notaries = append(notaries, spec.ServerName(n))
	}
	s := &Service{
		cfg:        d.Config,
		serverName: name,
		version:    d.Version,
		db:         db,
		keys:       NewKeys(name, d.Keys, db, client, notaries),
		client:     client,
		rooms:      d.Rooms,
		users:      d.Users,
		stop:       make(chan struct{}),
		keyID:      gomatrixserverlib.KeyID(d.Keys.Current.ID),
		privateKey: d.Keys.Current.PrivateKey,
	}
	if _, s.templateKey, err = ed25519.GenerateKey(nil); err != nil {
		return nil, err
	}
	s.sender = sender.New(db, client, name, d.SenderOptions)
	if err := s.sender.ConsumeRoomOutput(ctx, d.Bus, d.Rooms); err != nil {
		s.sender.Close()
		return nil, fmt.Errorf("federation sender: %w", err)
	}
	if err := s.sender.Start(ctx); err != nil {
		s.sender.Close()
		return nil, fmt.Errorf("federation sender: %w", err)
	}
	if err := s.startEDUs(ctx, d.Bus); err != nil {
		s.sender.Close()
		return nil, fmt.Errorf("federation EDUs: %w", err)
	}
	go s.pruneLoop()
	return s, nil
}

// inboundTxnRetention is how long an answered transaction is remembered.
const inboundTxnRetention = 7 * 24 * time.Hour

func (s *Service) pruneLoop() {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := s.db.PruneInboundTxns(ctx, time.Now().Add(-inboundTxnRetention).UnixMilli()); err != nil {
				logrus.WithError(err).Warn("federation: prune inbound transactions")
			}
			cancel()
		}
	}
}

// Close stops the sender; queued items stay for the next start.
func (s *Service) Close() {
	close(s.stop)
	s.edus.stop()
	s.sender.Close()
}

// Client is the signing federation client, for components that make
// federation requests (joins, backfill, media).
func (s *Service) Client() *Client { return s.client }

// Keys is the server key ring and this server's key publication.
func (s *Service) Keys() *Keys { return s.keys }

// Sender is the outbound queue, for components that send EDUs.
func (s *Service) Sender() *sender.Sender { return s.sender }

// Register adds the /_matrix/key and /_matrix/federation routes.
func (s *Service) Register(r chi.Router) {
	s.routes(r)
}
