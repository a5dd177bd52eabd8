// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// account is a resolved exec user.
type account struct {
	uid, gid uint32
	groups   []uint32 // supplementary groups, the primary one included
	home     string
}

// errUnknownUser reports a user or group missing from the databases.
var errUnknownUser = errors.New("guest: unknown user")

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// readDB reads a colon-separated database (etc/passwd, etc/group) under
// root, calling fn with the fields of each well-formed line. A missing file
// is an empty database.
func readDB(root, name string, minFields int, fn func([]string)) error {
	f, err := os.Open(filepath.Join(root, "etc", name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) >= minFields {
			fn(fields)
		}
	}
	return sc.Err()
}

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// resolveUser resolves spec ("name", "uid", "name:group", "uid:gid") in
// root's etc/passwd and etc/group. A numeric uid missing from etc/passwd is
// accepted with gid 0 and home "/"; a name that is missing is an error. The
// supplementary groups are the primary group and every group listing the
// user's name.
func resolveUser(root, spec string) (*account, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return nil, fmt.Errorf("%w: %q", errUnknownUser, spec)
	}
	var users []passwdEntry
	if err := readDB(root, "passwd", 7, func(f []string) {
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if ok1 && ok2 {
			users = append(users, passwdEntry{name: f[0], uid: uid, gid: gid, home: f[5]})
		}
	}); err != nil {
		return nil, fmt.Errorf("guest: read passwd: %w", err)
	}
	var groups []groupEntry
	if err := readDB(root, "group", 3, func(f []string) {
		gid, ok := parseID(f[2])
		if !ok {
			return
		}
		var members []string
		if len(f) > 3 && f[3] != "" {
			members = strings.Split(f[3], ",")
		}
		groups = append(groups, groupEntry{name: f[0], gid: gid, members: members})
	}); err != nil {
		return nil, fmt.Errorf("guest: read group: %w", err)
	}

	var pw *passwdEntry
	uid, numeric := parseID(userPart)
	for i := range users {
		if (numeric && users[i].uid == uid) || (!numeric && users[i].name == userPart) {
			pw = &users[i]
			break
		}
	}
	a := &account{uid: uid, home: "/"}
	switch {
	case pw != nil:
		a.uid, a.gid, a.home = pw.uid, pw.gid, pw.home
	case !numeric:
		return nil, fmt.Errorf("%w: %q", errUnknownUser, userPart)
	}
	if hasGroup {
		gid, ok := parseID(groupPart)
		found := false
		for _, g := range groups {
			if (ok && g.gid == gid) || (!ok && g.name == groupPart) {
				gid, found = g.gid, true
				break
			}
		}
		if !ok && !found {
			return nil, fmt.Errorf("%w: group %q", errUnknownUser, groupPart)
		}
		a.gid = gid
	}
	a.groups = []uint32{a.gid}
	if pw != nil {
		for _, g := range groups {
			if slices.Contains(g.members, pw.name) && !slices.Contains(a.groups, g.gid) {
				a.groups = append(a.groups, g.gid)
			}
		}
	}
	return a, nil
}
