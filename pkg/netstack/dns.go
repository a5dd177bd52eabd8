// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// DNS sizes: RFC 1035 section 4.2.1 limits plain UDP messages to 512 bytes;
// EDNS(0) (RFC 6891) lets a client advertise more, which we cap at the
// 1232 bytes DNS Flag Day 2020 recommends; TCP messages carry a 16-bit
// length (RFC 1035 section 4.2.2).
const (
	dnsUDPMin     = 512
	dnsEDNSSize   = 1232
	dnsTCPMax     = 65535
	dnsIdle       = 10 * time.Second // a guest DNS flow with no query for this long ends
	dnsAnswerTTL  = 60               // seconds, for HostName answers
	internalZone  = "microsandbox.internal"
	maxDNSAnswers = 64 // answers kept per reply; more is not a real resolver's answer
)

// resolver is the sandbox DNS: it answers guest queries on any address,
// port 53, by forwarding one sanitised question upstream.
type resolver struct {
	s *Stack
}

// serveUDP answers queries on one guest UDP session until it idles.
func (r *resolver) serveUDP(c net.Conn) {
	buf := make([]byte, dnsTCPMax)
	for {
		c.SetReadDeadline(time.Now().Add(dnsIdle))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if resp := r.handle(buf[:n], false); resp != nil {
			c.Write(resp)
		}
	}
}

// serveTCP answers length-prefixed queries on one guest TCP connection.
func (r *resolver) serveTCP(c net.Conn) {
	buf := make([]byte, dnsTCPMax)
	for {
		c.SetReadDeadline(time.Now().Add(dnsIdle))
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(buf[:2]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		resp := r.handle(buf[:n], true)
		if resp == nil {
			return
		}
		out := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(out, uint16(len(resp)))
		copy(out[2:], resp)
		c.SetWriteDeadline(time.Now().Add(dnsIdle))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// query is what handle learned from a guest message.
type query struct {
	id        uint16
	rd        bool
	q         dnsmessage.Question
	name      string // normalised q.Name
	maxSize   int
	hasEDNS   bool
	questions int
}

// parseQuery parses a guest DNS message. The bytes are guest-controlled;
// dnsmessage bounds-checks every field and label. ok is false when the
// message cannot be answered at all (not even its header parses, or it is
// a response).
func parseQuery(msg []byte, tcp bool) (qr query, rcode dnsmessage.RCode, ok bool) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		return qr, 0, false
	}
	qr.id, qr.rd = h.ID, h.RecursionDesired
	qr.maxSize = dnsUDPMin
	if tcp {
		qr.maxSize = dnsTCPMax
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return qr, dnsmessage.RCodeFormatError, true
	}
	qr.questions = len(qs)
	if len(qs) == 1 {
		qr.q = qs[0]
		qr.name = policy.NormalizeName(qs[0].Name.String())
	}
	if err := p.SkipAllAnswers(); err == nil {
		if err := p.SkipAllAuthorities(); err == nil {
			for {
				ah, err := p.AdditionalHeader()
				if err != nil {
					break
				}
				if ah.Type == dnsmessage.TypeOPT && !tcp {
					qr.hasEDNS = true
					qr.maxSize = min(max(int(ah.Class), dnsUDPMin), dnsEDNSSize)
				}
				if p.SkipAdditional() != nil {
					break
				}
			}
		}
	}
	switch {
	case h.OpCode != 0:
		return qr, dnsmessage.RCodeNotImplemented, true
	case len(qs) != 1:
		return qr, dnsmessage.RCodeFormatError, true
	case qs[0].Class != dnsmessage.ClassINET:
		return qr, dnsmessage.RCodeRefused, true
	}
	return qr, dnsmessage.RCodeSuccess, true
}

// handle answers one guest DNS message; nil means send nothing.
func (r *resolver) handle(msg []byte, tcp bool) []byte {
	s := r.s
	qr, rcode, ok := parseQuery(msg, tcp)
	if !ok {
		s.stats.dnsErrors.Add(1)
		return nil
	}
	s.stats.dnsQueries.Add(1)
	if rcode != dnsmessage.RCodeSuccess {
		s.stats.dnsErrors.Add(1)
		return qr.reply(rcode, nil, nil)
	}
	switch {
	case qr.name == HostName:
		return qr.reply(dnsmessage.RCodeSuccess, r.hostAnswers(qr.q), nil)
	case qr.name == internalZone || strings.HasSuffix(qr.name, "."+internalZone):
		return qr.reply(dnsmessage.RCodeNameError, nil, nil)
	case s.cfg.Policy.CheckName(qr.name).Action != policy.Allow:
		s.stats.dnsDenied.Add(1)
		return qr.reply(dnsmessage.RCodeNameError, nil, nil)
	}
	up, err := r.forward(qr.q)
	if err != nil {
		s.stats.dnsErrors.Add(1)
		return qr.reply(dnsmessage.RCodeServerFailure, nil, nil)
	}
	answers, auth, rc := r.filter(qr, up)
	return qr.reply(rc, answers, auth)
}

// filter keeps the upstream answers that belong to the question's CNAME
// chain, drops addresses rebinding protection refuses, pins the rest, and
// keeps only SOA authorities (for negative caching).
func (r *resolver) filter(qr query, up *dnsmessage.Message) (answers, auth []dnsmessage.Resource, rcode dnsmessage.RCode) {
	s := r.s
	rcode = up.Header.RCode
	if rcode != dnsmessage.RCodeSuccess && rcode != dnsmessage.RCodeNameError {
		rcode = dnsmessage.RCodeServerFailure
	}
	chain := map[string]bool{qr.name: true}
	for grew := true; grew; {
		grew = false
		for _, a := range up.Answers {
			c, ok := a.Body.(*dnsmessage.CNAMEResource)
			if !ok || !chain[policy.NormalizeName(a.Header.Name.String())] {
				continue
			}
			if t := policy.NormalizeName(c.CNAME.String()); !chain[t] && len(chain) < maxDNSAnswers {
				chain[t] = true
				grew = true
			}
		}
	}
	var addrs []netip.Addr
	var ttls []uint32
	dropped := 0
	for _, a := range up.Answers {
		if len(answers) >= maxDNSAnswers {
			break
		}
		if !chain[policy.NormalizeName(a.Header.Name.String())] || a.Header.Class != dnsmessage.ClassINET {
			continue
		}
		var ip netip.Addr
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			ip = netip.AddrFrom4(b.A)
		case *dnsmessage.AAAAResource:
			ip = netip.AddrFrom16(b.AAAA)
		case *dnsmessage.CNAMEResource:
		default:
			if a.Header.Type != qr.q.Type {
				continue
			}
		}
		if ip.IsValid() {
			if !r.answerAllowed(ip) {
				dropped++
				s.stats.dnsRebinding.Add(1)
				continue
			}
			addrs = append(addrs, ip)
			ttls = append(ttls, a.Header.TTL)
		}
		a.Header.TTL = min(a.Header.TTL, uint32(maxPinTTL/time.Second))
		answers = append(answers, a)
	}
	if dropped > 0 && len(addrs) == 0 {
		return nil, nil, dnsmessage.RCodeNameError
	}
	// Pin every address to every name of the chain, at most maxDNSAnswers
	// pairs per reply so one crafted reply cannot flush the table.
	pinned := 0
	for i, ip := range addrs {
		for n := range chain {
			if pinned++; pinned > maxDNSAnswers {
				break
			}
			s.pins.add(n, policy.Normalize(ip), time.Duration(ttls[i])*time.Second)
		}
	}
	for _, a := range up.Authorities {
		if _, ok := a.Body.(*dnsmessage.SOAResource); ok && len(auth) == 0 {
			auth = append(auth, a)
		}
	}
	return answers, auth, rcode
}

// answerAllowed is rebinding protection: a public address passes; any
// other passes only when the policy can reach it.
func (r *resolver) answerAllowed(ip netip.Addr) bool {
	s := r.s
	if s.cfg.AllowDNSRebinding {
		return true
	}
	switch policy.Classify(ip, s.isHost) {
	case policy.GroupPublic:
		return true
	case policy.GroupInvalid:
		return false
	}
	return s.cfg.Policy.Reachable(ip, s.env())
}

func (r *resolver) hostAnswers(q dnsmessage.Question) []dnsmessage.Resource {
	h := dnsmessage.ResourceHeader{Name: q.Name, Type: q.Type, Class: dnsmessage.ClassINET, TTL: dnsAnswerTTL}
	switch {
	case q.Type == dnsmessage.TypeA:
		return []dnsmessage.Resource{{Header: h, Body: &dnsmessage.AResource{A: Gateway4.As4()}}}
	case q.Type == dnsmessage.TypeAAAA && !r.s.cfg.DisableIPv6:
		return []dnsmessage.Resource{{Header: h, Body: &dnsmessage.AAAAResource{AAAA: Gateway6.As16()}}}
	}
	return nil
}

// reply packs the answer to qr, truncating (TC) when it does not fit.
func (qr query) reply(rcode dnsmessage.RCode, answers, auth []dnsmessage.Resource) []byte {
	m := dnsmessage.Message{
		Header: dnsmessage.Header{
			ID: qr.id, Response: true, RecursionDesired: qr.rd, RecursionAvailable: true, RCode: rcode,
		},
		Answers:     answers,
		Authorities: auth,
	}
	if qr.questions == 1 {
		m.Questions = []dnsmessage.Question{qr.q}
	}
	if qr.hasEDNS {
		var h dnsmessage.ResourceHeader
		if h.SetEDNS0(dnsEDNSSize, dnsmessage.RCodeSuccess, false) == nil {
			m.Additionals = []dnsmessage.Resource{{Header: h, Body: &dnsmessage.OPTResource{}}}
		}
	}
	b, err := m.Pack()
	if err == nil && len(b) <= qr.maxSize {
		return b
	}
	m.Header.Truncated = err == nil
	if err != nil {
		m.Header.RCode = dnsmessage.RCodeServerFailure
	}
	m.Answers, m.Authorities = nil, nil
	if b, err = m.Pack(); err != nil {
		return nil
	}
	return b
}

// forward asks the upstream resolvers, in order, for q.
func (r *resolver) forward(q dnsmessage.Question) (*dnsmessage.Message, error) {
	s := r.s
	if len(s.cfg.DNSServers) == 0 {
		return nil, errors.New("netstack: dns: no upstream resolvers")
	}
	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true}, Questions: []dnsmessage.Question{q}}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(dnsEDNSSize, dnsmessage.RCodeSuccess, false); err == nil {
		m.Additionals = []dnsmessage.Resource{{Header: opt, Body: &dnsmessage.OPTResource{}}}
	}
	req, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("netstack: dns: pack: %w", err)
	}
	var lastErr error
	for _, srv := range s.cfg.DNSServers {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DNSTimeout)
		resp, err := exchange(ctx, "udp", srv, req, id, q)
		if err == nil && resp.Header.Truncated {
			resp, err = exchange(ctx, "tcp", srv, req, id, q)
		}
		cancel()
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// exchange sends req to srv and returns the parsed response that matches
// id and q. Upstream bytes are parsed like guest bytes.
func exchange(ctx context.Context, network string, srv netip.AddrPort, req []byte, id uint16, q dnsmessage.Question) (*dnsmessage.Message, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, srv.String())
	if err != nil {
		return nil, fmt.Errorf("netstack: dns: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, dnsTCPMax)
	var resp []byte
	if network == "tcp" {
		out := make([]byte, 2+len(req))
		binary.BigEndian.PutUint16(out, uint16(len(req)))
		copy(out[2:], req)
		if _, err := c.Write(out); err != nil {
			return nil, fmt.Errorf("netstack: dns: %w", err)
		}
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return nil, fmt.Errorf("netstack: dns: %w", err)
		}
		n := int(binary.BigEndian.Uint16(buf[:2]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return nil, fmt.Errorf("netstack: dns: %w", err)
		}
		resp = buf[:n]
	} else {
		if _, err := c.Write(req); err != nil {
			return nil, fmt.Errorf("netstack: dns: %w", err)
		}
		for {
			n, err := c.Read(buf)
			if err != nil {
				return nil, fmt.Errorf("netstack: dns: %w", err)
			}
			// Skip stray datagrams with the wrong ID (RFC 5452 section 9).
			if n >= 2 && binary.BigEndian.Uint16(buf) == id {
				resp = buf[:n]
				break
			}
		}
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		return nil, fmt.Errorf("netstack: dns: bad upstream reply: %w", err)
	}
	if !m.Header.Response || m.Header.ID != id || len(m.Questions) != 1 ||
		m.Questions[0].Type != q.Type || m.Questions[0].Class != q.Class ||
		!strings.EqualFold(m.Questions[0].Name.String(), q.Name.String()) {
		return nil, errors.New("netstack: dns: upstream reply does not match the query")
	}
	return &m, nil
}

// readResolvConf returns the nameservers of a resolv.conf file, port 53.
func readResolvConf(path string) []netip.AddrPort {
	out := []netip.AddrPort{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53))
			}
		}
	}
	return out
}
