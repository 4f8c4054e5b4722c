package gateway

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSON appends c as encoding/json would write it, without its
// reflection: a CDR is written for every call, and json.Marshal was half
// of the cost of writing one. TestCDRJSONMatchesEncodingJSON keeps the
// two identical.
func (c *CDR) appendJSON(b []byte) []byte {
	b = append(b, `{"call_id":`...)
	b = appendString(b, c.CallID)
	b = append(b, `,"from":`...)
	b = appendString(b, c.From)
	b = append(b, `,"to":`...)
	b = appendString(b, c.To)
	b = append(b, `,"direction":`...)
	b = appendString(b, c.Direction)
	if c.Trunk != "" {
		b = append(b, `,"trunk":`...)
		b = appendString(b, c.Trunk)
	}
	b = append(b, `,"start":`...)
	b = appendTime(b, c.Start)
	if c.Answer != nil {
		b = append(b, `,"answer":`...)
		b = appendTime(b, *c.Answer)
	}
	b = append(b, `,"end":`...)
	b = appendTime(b, c.End)
	b = append(b, `,"duration_s":`...)
	b = appendFloat(b, c.DurationSec)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(c.Status), 10)
	b = append(b, `,"reason":`...)
	b = appendString(b, c.Reason)
	if c.HangupBy != "" {
		b = append(b, `,"hangup_by":`...)
		b = appendString(b, c.HangupBy)
	}
	if c.EndReason != "" {
		b = append(b, `,"end_reason":`...)
		b = appendString(b, c.EndReason)
	}
	if len(c.Media) > 0 {
		b = append(b, `,"media":[`...)
		for i := range c.Media {
			if i > 0 {
				b = append(b, ',')
			}
			s := &c.Media[i]
			b = append(b, `{"index":`...)
			b = strconv.AppendInt(b, int64(s.Index), 10)
			b = append(b, `,"caller":`...)
			b = s.Caller.appendJSON(b)
			b = append(b, `,"callee":`...)
			b = s.Callee.appendJSON(b)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func (l *LegStats) appendJSON(b []byte) []byte {
	b = append(b, `{"packets":`...)
	b = strconv.AppendUint(b, l.Packets, 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendUint(b, l.Bytes, 10)
	b = append(b, `,"lost":`...)
	b = strconv.AppendInt(b, l.Lost, 10)
	b = append(b, `,"jitter_ms":`...)
	b = appendFloat(b, l.JitterMS)
	b = append(b, `,"rtt_ms":`...)
	b = appendFloat(b, l.RTTMS)
	if l.SRTP {
		b = append(b, `,"srtp":true`...)
	}
	b = append(b, `,"loss_pct":`...)
	b = appendFloat(b, l.LossPct)
	b = append(b, `,"mos":`...)
	b = appendFloat(b, l.MOS)
	if len(l.Missing) > 0 {
		b = append(b, `,"quality_missing":[`...)
		for i, m := range l.Missing {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, m)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendString writes s quoted; anything but printable ASCII without
// quotes, backslashes or HTML characters goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendFloat formats f as encoding/json does (a statistic that is not a
// number is written as 0, where json.Marshal would fail the record).
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	abs, format := math.Abs(f), byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
