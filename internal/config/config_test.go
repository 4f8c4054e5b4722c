package config

import (
	"path/filepath"
	"strings"
	"testing"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/sip/digest"
)

func TestDefaultConfigLoads(t *testing.T) {
	c, err := Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatalf("embedded default does not load: %v", err)
	}
	if c.SIP.Domain != "voxvisor.local" {
		t.Errorf("domain = %q, want voxvisor.local", c.SIP.Domain)
	}
	if len(c.Users) != 3 || c.Users[0].Username != "1001" || c.Users[2].Password != "demo1003" {
		t.Errorf("demo users wrong: %v", c.Users)
	}
	if len(c.SIP.Listen) != 2 {
		t.Fatalf("listeners = %d, want udp and tcp", len(c.SIP.Listen))
	}
	for _, l := range c.SIP.Listen {
		if !l.AddrPort().Addr().IsLoopback() || l.AddrPort().Port() != 5060 {
			t.Errorf("default listener %v is not 127.0.0.1:5060", l)
		}
	}
	if err := c.CheckExposure(); err != nil {
		t.Errorf("default config must be allowed to run: %v", err)
	}
}

func TestDemoPasswordRefusedOffLoopback(t *testing.T) {
	c, err := Load("x.yaml", []byte("sip:\n  listen:\n    - {transport: udp, address: 0.0.0.0:5060}\nusers:\n  - {username: \"1001\", password: demo1001}\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckExposure()
	if err == nil || !strings.Contains(err.Error(), "demo password") {
		t.Fatalf("CheckExposure = %v, want a demo password refusal", err)
	}
}

// TestDemoHA1RefusedOffLoopback: a demo password given as its HA1 (MD5
// or SHA-256, under the file's realm) is as exposed as the password.
func TestDemoHA1RefusedOffLoopback(t *testing.T) {
	const realm = "pbx.example"
	md, _ := digest.HA1("MD5", "1001", realm, "demo1002")
	sh, _ := digest.HA1("SHA-256", "1001", realm, "demo1003")
	other, _ := digest.HA1("MD5", "1001", realm, "a real secret")
	for _, tc := range []struct{ user, want string }{
		{`{username: "1001", ha1: ` + md + `}`, "demo password (ha1)"},
		{`{username: "1001", ha1: ` + strings.ToUpper(md) + `}`, "demo password (ha1)"},
		{`{username: "1001", ha1_sha256: ` + sh + `}`, "demo password (ha1_sha256)"},
		{`{username: "1001", ha1: ` + other + `, ha1_sha256: ` + sh + `}`, "demo password (ha1_sha256)"},
		{`{username: "1001", ha1: ` + other + `}`, ""},
	} {
		yaml := "sip:\n  domain: " + realm + "\n  listen:\n    - {transport: udp, address: 192.0.2.10:5060}\nusers:\n  - " + tc.user + "\n"
		c, err := Load("x.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		err = c.CheckExposure()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: refused a real HA1: %v", tc.user, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "user 1001 has a "+tc.want) || !strings.Contains(err.Error(), "192.0.2.10:5060 is not loopback") {
			t.Errorf("%s: CheckExposure = %v, want a refusal naming %q", tc.user, err, tc.want)
		}
		// On loopback only, the demo may run.
		c.SIP.Listen[0].Address = "127.0.0.1:5060"
		if err := c.CheckExposure(); err != nil {
			t.Errorf("%s on loopback: %v", tc.user, err)
		}
	}
}

// TestSafeValuesLoad: the forms the injection checks must let through.
func TestSafeValuesLoad(t *testing.T) {
	c, err := Load("x.yaml", []byte(`
sip:
  listen:
    - {transport: udp, address: 127.0.0.1:5060, advertise: sip.example.com}
    - {transport: tcp, address: 127.0.0.1:5060, advertise: "[2001:db8::1]:5060"}
    - {transport: udp, address: 127.0.0.2:5060, advertise: 198.51.100.1:5070}
admin:
  listen: 0.0.0.0:8060
  token: s3cret-token
provision:
  storage: {volume_group: vg_vox.0, thin_pool: pool+1}
trunks:
  - name: carrier-a.de_1
    peers: [{host: 198.51.100.10}, {host: "2001:db8::10"}, {host: sip.carrier.example}]
    register: true
    credentials: {username: "acct-1@x", password: "p\"w", realm: carrier.example}
    caller_id: {from_user: "+4930123456", pai: "tel:+49-30-123456;cpc=ordinary"}
    dids:
      - {number: "+4930123456", uri: "sip:{did}@10.10.0.21:5060;transport=tcp"}
      - {pattern: "^\\+4930", uri: "sips:{did}@[2001:db8::5]:5061"}
      - {number: "100", uri: "sip:voicemail.example"}
    endpoint:
      network: {bridge: br-trunk.10, mac: "52:54:00:12:34:56", address: 10.10.0.21/24}
  - name: b
    peers: [{host: 198.51.100.20}]
    caller_id: {from_user: anonymous, pai: "sip:+4930123456@carrier.example;user=phone"}
dialplan:
  - {match: '^0([1-9]\d+)$', replace: "+49$1", trunks: [carrier-a.de_1]}
  - {match: '^00(?P<n>\d+)$', replace: "+${n}", trunks: [b]}
  - {prefix: "9", strip: 1, prepend: "+1", trunks: [b]}
`))
	if err != nil {
		t.Fatalf("safe values refused:\n%v", err)
	}
	if c.Trunks[0].Credentials.Password != `p"w` {
		t.Errorf("password %q", c.Trunks[0].Credentials.Password)
	}
}

// TestCheckURI: what checkURI accepts, sipgo parses to the same host;
// what it refuses says why.
func TestCheckURI(t *testing.T) {
	for _, u := range []string{
		"sip:10.10.0.21", "sip:0@10.10.0.21:5060", "sips:+49%2030@[2001:db8::1]:5061;transport=tls",
		"sip:user:pass@host.example;lr", "SIP:a.b-c_d!~*'()&=+$,/@h.example",
	} {
		if why := checkURI(u, "sip", "sips"); why != "" {
			t.Errorf("%s refused: %s", u, why)
			continue
		}
		var p siplib.Uri
		if err := siplib.ParseUri(u, &p); err != nil || p.Host == "" {
			t.Errorf("%s accepted here but sipgo reads %+v, %v", u, p, err)
		}
	}
	for u, want := range map[string]string{
		"sip:a@h\r\nX: y":          "must not hold",
		"sip:a@h>;x":               "must not hold",
		"sip:a@h?Subject=x":        "must not hold",
		"sip:a b@h":                "must not hold",
		"sip:a;b@h":                "malformed ;parameter",
		"sip:a@":                   "host name",
		"sip:a@2001:db8::1":        "port",
		"sip:a@[2001:db8::1":       "unclosed",
		"sip:a@[10.0.0.1]":         "no IPv6",
		"sip:a@h:0":                "port",
		"sip:a@h:+5":               "port",
		"sip:a%zz@h":               "user part",
		"tel:+49;x":                "",
		"tel:abc@h":                "tel: URI holds a number",
		"mailto:a@h":               "must start with",
		"sip:a@h;transport=tcp;lr": "",
		"sip:a@h;x=a,b":            "malformed ;parameter",
	} {
		got := checkURI(strings.ReplaceAll(u, "\\r\\n", "\r\n"), "sip", "sips", "tel")
		if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
			t.Errorf("checkURI(%q) = %q, want %q", u, got, want)
		}
	}
}

func TestUserStringHidesSecrets(t *testing.T) {
	u := User{Username: "1001", Password: "hunter2", HA1: "abc"}
	if s := u.String(); strings.Contains(s, "hunter2") || strings.Contains(s, "abc") {
		t.Fatalf("User.String leaks a secret: %q", s)
	}
}

// TestErrorsGolden checks the exact messages an operator sees: file, line, key.
func TestErrorsGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := LoadFile(f)
			if err == nil {
				t.Fatal("loaded a bad config without error")
			}
			testenv.Golden(t, strings.TrimSuffix(f, ".yaml")+".golden", err.Error()+"\n")
		})
	}
}

func TestGatewayExampleLoads(t *testing.T) {
	c, err := LoadFile("../../configs/gateway-example.yaml")
	if err != nil {
		t.Fatalf("the sample gateway config does not load: %v", err)
	}
	if e := c.Trunks[0].Endpoint; e == nil || e.MemoryBytes != 1<<30 || e.Disk.SizeBytes != 8<<30 || !*e.Autostart {
		t.Fatalf("carrier-a's endpoint: %+v", e)
	}
	if len(c.Trunks) != 2 || len(c.DialPlan) != 4 || c.Trunks[0].Peers[0].Port != 5060 {
		t.Fatalf("trunks %d, rules %d", len(c.Trunks), len(c.DialPlan))
	}
}
