// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import "fmt"

func fmtSscan(s string, v any) (int, error) { return fmt.Sscan(s, v) }

func must(s string, _ bool) string { return s }
