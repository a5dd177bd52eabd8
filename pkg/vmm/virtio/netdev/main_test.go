// SPDX-License-Identifier: Apache-2.0

package netdev_test

import (
	"testing"

	"github.com/microsandbox-go/microsandbox/internal/leaktest"
)

// TestMain fails the run if goroutines of this module outlive the tests.
func TestMain(m *testing.M) { leaktest.Main(m) }
