package media

import (
	"errors"
	"fmt"
)

// ErrPoolExhausted means no free port pair is left: answer 503. The
// error returned is a *PoolError, which says why.
var ErrPoolExhausted = errors.New("media: relay port pool exhausted")

// PoolError is ErrPoolExhausted with the pool's state when a pair was
// refused, so the 503's Warning and the log say why: every pair in use,
// or the free ones taken by another program.
type PoolError struct {
	Pairs       int   // pairs in the range
	InUse       int   // pairs handed out
	Quarantined int   // pairs released too recently, none of them usable
	Bind        error // the last bind failure, when free pairs would not bind
}

func (e *PoolError) Error() string { return "media: relay port pool exhausted: " + e.Reason() }

// Reason says why in a few words, for a Warning header.
func (e *PoolError) Reason() string {
	s := fmt.Sprintf("%d of %d port pairs in use, %d in quarantine", e.InUse, e.Pairs, e.Quarantined)
	if e.Bind != nil {
		s += fmt.Sprintf(", free pairs would not bind (%v)", e.Bind)
	}
	return s
}

// Is makes errors.Is(err, ErrPoolExhausted) hold.
func (e *PoolError) Is(target error) bool { return target == ErrPoolExhausted }
