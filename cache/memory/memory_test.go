package memory_test

import (
	"testing"

	"github.com/edged/edged/cache"
	"github.com/edged/edged/cache/cachetest"
	"github.com/edged/edged/cache/memory"
)

func TestConformance(t *testing.T) {
	cachetest.Run(t, func(*testing.T) cache.Cache { return memory.New() })
}
