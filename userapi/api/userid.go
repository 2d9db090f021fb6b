package api

import (
	"fmt"
	"strings"

	"github.com/parley-chat/parley/config"
)

// MaxUserIDLength is the longest user ID, sigil and server name included
// (appendices §"User Identifiers").
const MaxUserIDLength = 255

// ValidateNewLocalpart checks a localpart for a new account: only
// a-z 0-9 . _ = - / + are allowed (appendices §"User Identifiers"), and
// the resulting user ID on serverName must fit in MaxUserIDLength.
func ValidateNewLocalpart(localpart, serverName string) error {
	if localpart == "" {
		return fmt.Errorf("%w: the username is empty", ErrInvalidUsername)
	}
	for i := 0; i < len(localpart); i++ {
		c := localpart[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			return fmt.Errorf("%w: usernames may only contain a-z, 0-9 and . _ = - / +", ErrInvalidUsername)
		}
	}
	if len(localpart)+len(serverName)+2 > MaxUserIDLength {
		return fmt.Errorf("%w: the user ID would be longer than %d characters", ErrInvalidUsername, MaxUserIDLength)
	}
	return nil
}

// validHistoricalLocalpart accepts the wider grammar that user IDs created
// before the tightening may use: any printable ASCII except ':'
// (appendices §"Historical User IDs"). Such users must still be able to log in.
func validHistoricalLocalpart(localpart string) bool {
	if localpart == "" {
		return false
	}
	for i := 0; i < len(localpart); i++ {
		if c := localpart[i]; c < 0x21 || c > 0x7E || c == ':' {
			return false
		}
	}
	return true
}

// ParseUserID splits @localpart:server, accepting historical localparts.
func ParseUserID(userID string) (localpart, serverName string, err error) {
	if len(userID) > MaxUserIDLength {
		return "", "", fmt.Errorf("%w: longer than %d characters", ErrInvalidUsername, MaxUserIDLength)
	}
	rest, ok := strings.CutPrefix(userID, "@")
	if !ok {
		return "", "", fmt.Errorf("%w: a user ID starts with @", ErrInvalidUsername)
	}
	localpart, serverName, ok = strings.Cut(rest, ":")
	if !ok || !validHistoricalLocalpart(localpart) {
		return "", "", fmt.Errorf("%w: expected @localpart:server", ErrInvalidUsername)
	}
	if err := config.ValidateServerName(serverName); err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrInvalidUsername, err)
	}
	return localpart, serverName, nil
}

// LocalUserID parses userID and checks that it belongs to serverName.
func LocalUserID(userID, serverName string) (localpart string, err error) {
	localpart, server, err := ParseUserID(userID)
	if err != nil {
		return "", err
	}
	if server != serverName {
		return "", ErrNotLocal
	}
	return localpart, nil
}
