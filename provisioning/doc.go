// Package provisioning will turn the configuration's trunks into
// infrastructure: per trunk a KVM guest (libvirt), its volume (LVM) and its
// firewall rules, through plan, apply, destroy and status. It never runs
// in the call path. Not yet implemented: see issue 5 (provisioning).
package provisioning
