//go:build !edged_no_modbus

package main

import (
	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/drivers/modbus"
)

func init() {
	builtinDrivers = append(builtinDrivers, func(cfg *config.Config, r *drivers.Registry) {
		for _, p := range []string{modbus.Protocol, modbus.ProtocolRTU, modbus.ProtocolRTUOverTCP} {
			r.Register(p, modbus.Factory(cfg))
		}
	})
}
