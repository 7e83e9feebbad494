// token-server: the token endpoint of the test environment's token-auth registry (registry C),
// as Docker Hub, GHCR or Harbor run one beside theirs. Test support code, not the product.
//
// It follows the distribution token specification: GET with Basic credentials or none
// (anonymous), POST with the OAuth2 password and refresh_token grants, refresh tokens when
// asked for (offline_token=true, access_type=offline). Tokens are ES256 JWTs whose x5c header
// carries the certificate the registry trusts (its rootcertbundle), with the access the
// configuration's rules allow: a repository the account may not read gets a token without
// that access, and the registry answers 401 insufficient_scope, as real ones do.
//
// Everything issued is recorded; GET /stats?prefix=P lists the tokens issued for scopes of
// repositories whose names start with P, so tests that run at once count only their own.
package main

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Rule grants an account actions on the repositories matching a pattern ("x/*" or "*" or an
// exact name); the first matching rule decides. Account "" is anonymous, "*" anyone.
type Rule struct {
	Account      string   `json:"account"`
	Repositories string   `json:"repositories"`
	Actions      []string `json:"actions"`
}

// Lifetime sets how long tokens for matching repositories live.
type Lifetime struct {
	Repositories string `json:"repositories"`
	Seconds      int    `json:"seconds"`
}

// Config is the token server's JSON configuration file.
type Config struct {
	Issuer         string            `json:"issuer"`
	Service        string            `json:"service"`
	Users          map[string]string `json:"users"`
	Rules          []Rule            `json:"rules"`
	DefaultSeconds int               `json:"default_seconds"`
	Lifetimes      []Lifetime        `json:"lifetimes"`
	// The first token for each (account, scope) of these repositories is already expired
	// (beyond the registry's leeway) although expires_in says otherwise: a revoked token, or
	// a token server whose clock runs ahead.
	ExpiredFirst []string `json:"expired_first"`
}

// Issued is one token handed out, as /stats reports it.
type Issued struct {
	Account string   `json:"account"`
	Scopes  []string `json:"scopes"`
	Grant   string   `json:"grant"`
	Expired bool     `json:"expired"`
}

// Refusal is one token request refused (bad credentials, bad refresh token).
type Refusal struct {
	Account string   `json:"account"`
	Scopes  []string `json:"scopes"`
	Reason  string   `json:"reason"`
}

type server struct {
	config Config
	key    *ecdsa.PrivateKey
	x5c    string

	mu       sync.Mutex
	issued   []Issued
	refusals []Refusal
	refresh  map[string]string // refresh token -> account
	seen     map[string]bool   // account|scope pairs that had a token (for expired_first)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:5003", "listen address")
	keyPath := flag.String("key", "", "EC private key (PEM) that signs tokens")
	certPath := flag.String("cert", "", "its certificate (PEM), the registry's rootcertbundle")
	configPath := flag.String("config", "", "JSON configuration")
	flag.Parse()
	s, err := load(*keyPath, *certPath, *configPath)
	if err != nil {
		log.Fatalf("token-server: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", s.token)
	mux.HandleFunc("/stats", s.stats)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	log.Printf("token-server: listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

func load(keyPath, certPath, configPath string) (*server, error) {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM block in the key file")
	}
	key, err := parseECKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	certBlock, _ := pem.Decode(certPEM)
	if certBlock == nil {
		return nil, errors.New("no PEM block in the certificate file")
	}
	raw, err := os.ReadFile(configPath)
	if err != nil {
		return nil, err
	}
	var config Config
	if err := json.Unmarshal(raw, &config); err != nil {
		return nil, fmt.Errorf("%s: %v", configPath, err)
	}
	if config.DefaultSeconds == 0 {
		config.DefaultSeconds = 60
	}
	return &server{
		config:  config,
		key:     key,
		x5c:     base64.StdEncoding.EncodeToString(certBlock.Bytes),
		refresh: map[string]string{},
		seen:    map[string]bool{},
	}, nil
}

func parseECKey(der []byte) (*ecdsa.PrivateKey, error) {
	if key, err := x509.ParseECPrivateKey(der); err == nil {
		return key, nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("the key is not an EC key")
	}
	return key, nil
}

// request is a token request, whichever form it came in.
type request struct {
	account string
	grant   string
	scopes  []string
	offline bool
}

func (s *server) token(w http.ResponseWriter, r *http.Request) {
	req, status, reason := s.authenticate(r)
	if status != http.StatusOK {
		s.mu.Lock()
		s.refusals = append(s.refusals, Refusal{Account: req.account, Scopes: req.scopes, Reason: reason})
		s.mu.Unlock()
		writeJSON(w, status, map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": reason}}})
		return
	}
	if service := r.Form.Get("service"); service != "" && service != s.config.Service {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown service " + service})
		return
	}
	answer, err := s.issue(req)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, answer)
}

// authenticate reads the request's grant and checks its credentials.
func (s *server) authenticate(r *http.Request) (request, int, string) {
	if err := r.ParseForm(); err != nil {
		return request{}, http.StatusBadRequest, err.Error()
	}
	if r.Method == http.MethodGet {
		req := request{grant: "anonymous", scopes: r.Form["scope"], offline: r.Form.Get("offline_token") == "true"}
		user, password, ok := r.BasicAuth()
		if !ok {
			req.offline = false
			return req, http.StatusOK, ""
		}
		req.account, req.grant = user, "basic"
		if s.config.Users[user] != password || password == "" {
			return req, http.StatusUnauthorized, "bad credentials"
		}
		return req, http.StatusOK, ""
	}
	if r.Method != http.MethodPost {
		return request{}, http.StatusMethodNotAllowed, "GET or POST"
	}
	req := request{
		grant:   r.PostForm.Get("grant_type"),
		scopes:  strings.Fields(r.PostForm.Get("scope")),
		offline: r.PostForm.Get("access_type") == "offline",
	}
	switch req.grant {
	case "password":
		req.account = r.PostForm.Get("username")
		password := r.PostForm.Get("password")
		if s.config.Users[req.account] != password || password == "" {
			return req, http.StatusUnauthorized, "bad credentials"
		}
	case "refresh_token":
		s.mu.Lock()
		account, ok := s.refresh[r.PostForm.Get("refresh_token")]
		s.mu.Unlock()
		if !ok {
			return req, http.StatusUnauthorized, "unknown refresh token"
		}
		req.account, req.offline = account, true
	default:
		return req, http.StatusBadRequest, "unsupported grant_type " + req.grant
	}
	return req, http.StatusOK, ""
}

// access is one entry of a token's "access" claim.
type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (s *server) issue(req request) (map[string]any, error) {
	var granted []access
	lifetime := s.config.DefaultSeconds
	expired := false
	s.mu.Lock()
	for _, scope := range req.scopes {
		kind, name, actions, ok := parseScope(scope)
		if !ok || kind != "repository" {
			continue
		}
		allowed := s.allowed(req.account, name)
		granted = append(granted, access{Type: kind, Name: name, Actions: intersect(actions, allowed)})
		for _, l := range s.config.Lifetimes {
			if matches(l.Repositories, name) && l.Seconds < lifetime {
				lifetime = l.Seconds
			}
		}
		for _, pattern := range s.config.ExpiredFirst {
			if matches(pattern, name) && !s.seen[req.account+"|"+scope] {
				expired = true
			}
		}
		s.seen[req.account+"|"+scope] = true
	}
	s.issued = append(s.issued, Issued{Account: req.account, Scopes: req.scopes, Grant: req.grant, Expired: expired})
	var refresh string
	if req.offline && req.account != "" {
		refresh = randomHex(16)
		s.refresh[refresh] = req.account
	}
	s.mu.Unlock()

	now := time.Now()
	claims := map[string]any{
		"iss":    s.config.Issuer,
		"sub":    req.account,
		"aud":    s.config.Service,
		"iat":    now.Unix(),
		"nbf":    now.Add(-10 * time.Second).Unix(),
		"exp":    now.Add(time.Duration(lifetime) * time.Second).Unix(),
		"jti":    randomHex(8),
		"access": nonNil(granted),
	}
	if expired {
		claims["nbf"] = now.Add(-20 * time.Minute).Unix()
		claims["exp"] = now.Add(-10 * time.Minute).Unix()
	}
	signed, err := s.sign(claims)
	if err != nil {
		return nil, err
	}
	answer := map[string]any{
		"token":        signed,
		"access_token": signed,
		"expires_in":   lifetime,
		"issued_at":    now.UTC().Format(time.RFC3339),
	}
	if refresh != "" {
		answer["refresh_token"] = refresh
	}
	return answer, nil
}

// allowed is the actions the first matching rule gives account on repository name.
func (s *server) allowed(account, name string) []string {
	for _, rule := range s.config.Rules {
		if (rule.Account == "*" || rule.Account == account) && matches(rule.Repositories, name) {
			return rule.Actions
		}
	}
	return nil
}

func (s *server) sign(claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{s.x5c}})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signingInput := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signingInput))
	r, sigS, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", err
	}
	// JWS ES256: r and s, each left-padded to 32 bytes.
	signature := make([]byte, 64)
	r.FillBytes(signature[:32])
	sigS.FillBytes(signature[32:])
	return signingInput + "." + enc.EncodeToString(signature), nil
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	s.mu.Lock()
	defer s.mu.Unlock()
	issued := []Issued{}
	for _, i := range s.issued {
		if anyScopeUnder(i.Scopes, prefix) {
			issued = append(issued, i)
		}
	}
	refusals := []Refusal{}
	for _, f := range s.refusals {
		if anyScopeUnder(f.Scopes, prefix) {
			refusals = append(refusals, f)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"issued": issued, "refusals": refusals})
}

func anyScopeUnder(scopes []string, prefix string) bool {
	for _, scope := range scopes {
		if _, name, _, ok := parseScope(scope); ok && strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return prefix == ""
}

// parseScope splits "repository:name:pull,push" (a name holds no colon, a host may: the
// actions follow the last colon).
func parseScope(scope string) (kind, name string, actions []string, ok bool) {
	first := strings.Index(scope, ":")
	last := strings.LastIndex(scope, ":")
	if first < 0 || last <= first {
		return "", "", nil, false
	}
	return scope[:first], scope[first+1 : last], strings.Split(scope[last+1:], ","), true
}

func matches(pattern, name string) bool {
	if strings.HasSuffix(pattern, "*") {
		return strings.HasPrefix(name, strings.TrimSuffix(pattern, "*"))
	}
	return pattern == name
}

func intersect(asked, allowed []string) []string {
	out := []string{}
	for _, a := range asked {
		for _, b := range allowed {
			if a == b || b == "*" {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

func nonNil(granted []access) []access {
	if granted == nil {
		return []access{}
	}
	return granted
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(body); err != nil {
		log.Printf("token-server: writing an answer: %v", err)
	}
}
