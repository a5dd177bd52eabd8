// SPDX-License-Identifier: Apache-2.0

// Package inner is run by the harness's own tests: one test passes, one
// fails, one hangs.
package inner

import (
	"testing"
	"time"
)

func TestPasses(t *testing.T) { t.Log("inner pass") }

func TestFails(t *testing.T) { t.Fatal("inner failure, as intended") }

func TestHangs(t *testing.T) { time.Sleep(time.Hour) }
