package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"
)

// ngClient speaks rtpengine's ng control protocol: "<cookie> <bencode>"
// over UDP.
type ngClient struct {
	addr string
}

func (n *ngClient) call(ctx context.Context, req map[string]any) (map[string]any, error) {
	c, err := net.Dial("udp", n.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var ck [6]byte
	rand.Read(ck[:])
	cookie := hex.EncodeToString(ck[:])
	var b bytes.Buffer
	b.WriteString(cookie + " ")
	bencode(&b, req)
	if _, err := c.Write(b.Bytes()); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 65535)
	nr, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	resp := buf[:nr]
	i := bytes.IndexByte(resp, ' ')
	if i < 0 || string(resp[:i]) != cookie {
		return nil, errors.New("ng: bad cookie")
	}
	v, _, err := bdecode(resp[i+1:])
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("ng: not a dictionary")
	}
	if r, _ := m["result"].(string); r != "ok" && r != "pong" {
		return m, fmt.Errorf("ng: %v: %v", m["result"], m["error-reason"])
	}
	return m, nil
}

func bencode(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case string:
		b.WriteString(strconv.Itoa(len(v)) + ":" + v)
	case int:
		b.WriteString("i" + strconv.Itoa(v) + "e")
	case []string:
		b.WriteByte('l')
		for _, s := range v {
			bencode(b, s)
		}
		b.WriteByte('e')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('d')
		for _, k := range keys {
			bencode(b, k)
			bencode(b, v[k])
		}
		b.WriteByte('e')
	}
}

func bdecode(p []byte) (any, []byte, error) {
	if len(p) == 0 {
		return nil, nil, errors.New("bencode: short")
	}
	switch {
	case p[0] == 'i':
		e := bytes.IndexByte(p, 'e')
		if e < 0 {
			return nil, nil, errors.New("bencode: int")
		}
		n, err := strconv.Atoi(string(p[1:e]))
		return n, p[e+1:], err
	case p[0] == 'l':
		var out []any
		p = p[1:]
		for len(p) > 0 && p[0] != 'e' {
			v, rest, err := bdecode(p)
			if err != nil {
				return nil, nil, err
			}
			out, p = append(out, v), rest
		}
		if len(p) == 0 {
			return nil, nil, errors.New("bencode: list")
		}
		return out, p[1:], nil
	case p[0] == 'd':
		out := map[string]any{}
		p = p[1:]
		for len(p) > 0 && p[0] != 'e' {
			k, rest, err := bdecode(p)
			if err != nil {
				return nil, nil, err
			}
			v, rest2, err := bdecode(rest)
			if err != nil {
				return nil, nil, err
			}
			ks, _ := k.(string)
			out[ks], p = v, rest2
		}
		if len(p) == 0 {
			return nil, nil, errors.New("bencode: dict")
		}
		return out, p[1:], nil
	default:
		c := bytes.IndexByte(p, ':')
		if c < 0 {
			return nil, nil, errors.New("bencode: string")
		}
		n, err := strconv.Atoi(string(p[:c]))
		if err != nil || c+1+n > len(p) {
			return nil, nil, errors.New("bencode: string length")
		}
		return string(p[c+1 : c+1+n]), p[c+1+n:], nil
	}
}
