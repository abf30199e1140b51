package config

import _ "embed"

// Sample is the annotated sample config: the one place its documentation
// lives. A test loads it so it cannot rot.
//
//go:embed sample.yaml
var Sample []byte
