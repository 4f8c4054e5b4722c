// Package configs holds voxvisor's sample and default configuration files.
// The default is embedded so that `voxvisor serve` runs with no file at all.
// It holds no logic beyond the embed.
package configs

import _ "embed"

// Default is configs/voxvisor.yaml, the configuration used when no file is given.
//
//go:embed voxvisor.yaml
var Default []byte

// DefaultName is the name errors in the embedded default are reported under.
const DefaultName = "<embedded voxvisor.yaml>"
