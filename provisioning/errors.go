package provisioning

import "errors"

// ErrPreflight marks a plan error that a preflight check found: something
// apply needs and the host lacks (a base image, a bridge, a usable
// /dev/kvm). It refuses apply of the trunk, not destroy. Other plan
// errors (a resource of the trunk's name that voxvisor did not create, a
// state that could not be read) refuse both.
var ErrPreflight = errors.New("preflight check failed")

// preflight wraps an error found by a preflight check: its text is the
// check's, and errors.Is(err, ErrPreflight) holds.
type preflight struct{ error }

func (e preflight) Unwrap() error      { return e.error }
func (preflight) Is(target error) bool { return target == ErrPreflight }
