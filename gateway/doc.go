// Package gateway will hold SIP trunks to carriers: dial plans, number
// normalisation, failover, channel limits, upstream registration, inbound
// ACL and DID routing, and CDRs. It knows no libvirt.
// Not yet implemented: see issue 4 (gateway).
package gateway
