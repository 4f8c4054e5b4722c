package dialog

import (
	"fmt"
	"time"

	siplib "github.com/emiago/sipgo/sip"
)

// Record is an answered dialog as another switch of a cluster needs it
// to end the call when the switch that owns it dies: the call's identity
// for its CDR, and each side as far as a BYE to it goes.
type Record struct {
	ID        string        `json:"id"`
	From      string        `json:"from"`
	Dialed    string        `json:"dialed"`
	Direction string        `json:"direction"`
	Trunk     string        `json:"trunk,omitempty"`
	Created   time.Time     `json:"created"`
	Answered  time.Time     `json:"answered"`
	Shift     uint32        `json:"shift,omitempty"`
	Parties   [2]PartyState `json:"parties"` // caller, callee
}

// PartyState is a Party in a Record.
type PartyState struct {
	Tag       string   `json:"tag"`
	Contact   string   `json:"contact,omitempty"`
	Addr      string   `json:"addr"`
	Transport string   `json:"transport"`
	CSeq      uint32   `json:"cseq"`
	NameAddr  string   `json:"name_addr"`
	Route     []string `json:"route,omitempty"`
}

// Record returns d's record.
func (d *Dialog) Record() Record {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := Record{ID: d.ID, From: d.From, Dialed: d.Dialed, Direction: d.Direction, Trunk: d.trunk,
		Created: d.Created, Answered: d.answered, Shift: d.Shift.Load()}
	for i, p := range d.parties {
		r.Parties[i] = PartyState{Tag: p.Tag, Addr: p.Addr, Transport: p.Transport, CSeq: p.CSeq, NameAddr: p.NameAddr}
		if p.Contact != nil {
			r.Parties[i].Contact = p.Contact.String()
		}
		for _, u := range p.Route {
			r.Parties[i].Route = append(r.Parties[i].Route, u.String())
		}
	}
	return r
}

// adoptedCSeqs is how far an adopted dialog's CSeqs are moved on: the
// record is written when the call is answered and refreshed, so a side
// may have sent a few requests since; the BYE must carry a higher CSeq.
const adoptedCSeqs = 1000

// Adopt puts the dialog of another switch, dead, into the table, so that
// it can be ended here (Hangup: a BYE to each side, its CDR through the
// observers). It has nothing to release: what it held died with that
// switch. The dialog is not started again (no StartObserver is told).
func (t *Table) Adopt(r Record) (*Dialog, error) {
	if r.ID == "" || r.Answered.IsZero() {
		return nil, fmt.Errorf("dialog record %q: not an answered dialog", r.ID)
	}
	d := &Dialog{ID: r.ID, From: r.From, Dialed: r.Dialed, Direction: r.Direction, Created: r.Created, table: t,
		trunk: r.Trunk, answered: r.Answered, refreshed: t.now(), status: 200}
	d.Shift.Store(r.Shift)
	for i, p := range r.Parties {
		d.parties[i] = Party{Tag: p.Tag, Addr: p.Addr, Transport: p.Transport, NameAddr: p.NameAddr,
			CSeq: min(p.CSeq+adoptedCSeqs, maxCSeq-1)}
		if p.Contact != "" {
			var u siplib.Uri
			if err := siplib.ParseUri(p.Contact, &u); err != nil {
				return nil, fmt.Errorf("dialog record %q: %s's contact %q: %w", r.ID, Side(i), p.Contact, err)
			}
			d.parties[i].Contact = &u
		}
		for _, s := range p.Route {
			var u siplib.Uri
			if err := siplib.ParseUri(s, &u); err != nil {
				return nil, fmt.Errorf("dialog record %q: %s's route %q: %w", r.ID, Side(i), s, err)
			}
			d.parties[i].Route = append(d.parties[i].Route, u)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.dialogs[r.ID]; ok {
		return nil, fmt.Errorf("dialog record %q: a dialog with this Call-ID is here already", r.ID)
	}
	t.dialogs[r.ID] = d
	t.Begun.Add(1)
	return d, nil
}
