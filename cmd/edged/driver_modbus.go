//go:build !edged_no_modbus

package main

import (
	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/drivers/modbus"
)

func init() {
	builtinDrivers = append(builtinDrivers, func(cfg *config.Config, r *drivers.Registry) {
		r.Register(modbus.Protocol, modbus.Factory(cfg))
	})
}
