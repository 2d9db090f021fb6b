package clientapi

import (
	"errors"
	"net/http"

	"github.com/parley-chat/parley/internal/httputil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Device management".

// maxDeleteDevices bounds one POST /delete_devices request.
const maxDeleteDevices = 1000

type deviceJSON struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d userapi.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// handleListDevices is GET /devices.
func (s *Server) handleListDevices(w http.ResponseWriter, r *http.Request) {
	c := httputil.CallerFrom(r.Context())
	devices, err := s.users.ListDevices(r.Context(), c.UserID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	out := make([]deviceJSON, 0, len(devices))
	for _, d := range devices {
		out = append(out, toDeviceJSON(d))
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"devices": out})
}

// callerDevice loads the {deviceId} device of the caller, or answers 404.
func (s *Server) callerDevice(r *http.Request) (*userapi.Device, error) {
	deviceID, err := pathParam(r, "deviceId")
	if err != nil {
		return nil, err
	}
	d, err := s.users.GetDevice(r.Context(), httputil.CallerFrom(r.Context()).UserID, deviceID)
	if errors.Is(err, userapi.ErrNotFound) {
		return nil, httputil.NotFound("Unknown device")
	}
	return d, err
}

// handleGetDevice is GET /devices/{deviceId}.
func (s *Server) handleGetDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.callerDevice(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, toDeviceJSON(*d))
}

// handleUpdateDevice is PUT /devices/{deviceId}; without display_name
// nothing changes.
func (s *Server) handleUpdateDevice(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	d, err := s.callerDevice(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.DisplayName != nil {
		if err := checkDeviceFields("", *req.DisplayName); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		err := s.users.UpdateDevice(r.Context(), d.UserID, d.DeviceID, *req.DisplayName)
		if errors.Is(err, userapi.ErrNotFound) {
			err = httputil.NotFound("Unknown device")
		}
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// handleDeleteDevice is DELETE /devices/{deviceId}, behind UIA. An unknown
// device is reported before authentication so the user is not asked for
// a password for nothing.
func (s *Server) handleDeleteDevice(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Auth *authDict `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	d, err := s.callerDevice(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.deleteDevicesWithUIA(w, r, req.Auth, []string{d.DeviceID})
}

// handleDeleteDevices is POST /delete_devices, behind UIA; unknown device
// IDs are ignored.
func (s *Server) handleDeleteDevices(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Auth    *authDict `json:"auth"`
		Devices []string  `json:"devices"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.Devices == nil {
		httputil.WriteError(w, r, httputil.MissingParam("Missing devices"))
		return
	}
	if len(req.Devices) > maxDeleteDevices {
		httputil.WriteError(w, r, httputil.InvalidParam("At most %d devices can be deleted at once", maxDeleteDevices))
		return
	}
	s.deleteDevicesWithUIA(w, r, req.Auth, req.Devices)
}

func (s *Server) deleteDevicesWithUIA(w http.ResponseWriter, r *http.Request, auth *authDict, deviceIDs []string) {
	c := httputil.CallerFrom(r.Context())
	sess, err := s.checkUIA(r.Context(), opDeleteDevices, c.UserID, passwordFlows, auth)
	if err != nil {
		writeUIAError(w, r, err)
		return
	}
	if err := s.users.DeleteDevices(r.Context(), c.UserID, deviceIDs); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.users.DeleteUIASession(r.Context(), sess.ID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}
