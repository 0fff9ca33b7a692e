package agent

import (
	"errors"
	"fmt"
	"github.com/eclipse/paho.golang/paho"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/millwright/millwright/agent/aggregate"
	"github.com/millwright/millwright/agent/backoff"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/protocol"
)

// ErrConfig is wrapped by every configuration error. The message names the
// key ("uplink.keepalive: …").
var ErrConfig = errors.New("invalid agent configuration")

// Config is the agent's configuration, usually read from a YAML file with
// LoadConfig. Start from DefaultConfig: LoadConfig lays the file over the
// defaults, so a key the file leaves out keeps its default, and a key set
// to 0 means what its field says zero means. docs/agent.md lists every key.
type Config struct {
	// DeviceID is the device's ID. Default (empty): the common name of the
	// device certificate, which is what the server authenticates; when set
	// it must equal that common name.
	DeviceID string `yaml:"device_id"`
	// TLS names the device certificate, its key and the CA that signed
	// the server's certificate.
	TLS TLSConfig `yaml:"tls"`
	// Uplink says how and where batches are sent.
	Uplink UplinkConfig `yaml:"uplink"`
	// Spool is the durable on-device store.
	Spool SpoolConfig `yaml:"spool"`
	// Batch bounds a batch and sets the dynamic batch window.
	Batch BatchConfig `yaml:"batch"`
	// Schedule is the scattered send schedule.
	Schedule ScheduleConfig `yaml:"schedule"`
	// Health sets how often the agent reports its own health as
	// measurements named agent_*.
	Health HealthConfig `yaml:"health"`
	// Log configures the command's logger (the library takes a logger).
	Log LogConfig `yaml:"log"`
	// Sources are the measurement sources. Default: none.
	Sources SourcesConfig `yaml:"sources"`
	// Identity is what the device reports about itself when it connects (MQTT 5 CONNECT user
	// properties hw_model, net_operator, fw_version); the registry keeps them current so the
	// fleet can be filtered and compared by them. Default: nothing reported.
	Identity IdentityConfig `yaml:"identity"`
	// Commands says which of the server's commands that act on the device itself the agent
	// runs (docs/agent.md, "Commands"). Local only: the server cannot set them.
	Commands CommandsConfig `yaml:"commands"`
	// OTA sets up signed over-the-air firmware updates (docs/agent.md, "Firmware updates").
	// Local only: the server cannot set it. Default: off (firmware.update is refused).
	OTA OTAConfig `yaml:"ota"`
}

// OTAConfig sets up the firmware.update command and the confirmation of an update after the
// restart (docs/agent.md, "Firmware updates").
type OTAConfig struct {
	// TrustedKeysFile holds the ed25519 public keys (PEM "PUBLIC KEY" blocks) whose signature
	// on a release's manifest the device accepts. Default (empty): updates are off and
	// firmware.update is answered failed, reason "refused".
	TrustedKeysFile string `yaml:"trusted_keys_file"`
	// Dir holds the downloads (<sha256>.part, resumed after a cut or a restart) and the
	// record of an installed update awaiting confirmation. Default <spool.dir>/ota.
	Dir string `yaml:"dir"`
	// InstallCommand is the program and arguments that install a verified image, run with
	// MW_FIRMWARE_FILE (the image), MW_FIRMWARE_VERSION and MW_FIRMWARE_SHA256 in its
	// environment. Exit status 0 means the image is installed and the device runs it after
	// its restart. Required with trusted_keys_file unless the embedding program passes
	// Options.Installer.
	InstallCommand []string `yaml:"install_command"`
	// CommitCommand runs once the new version reached the server (it marks the image good,
	// for a bootloader that would otherwise fall back), with MW_FIRMWARE_VERSION and
	// MW_FIRMWARE_PREVIOUS_VERSION. Default none.
	CommitCommand []string `yaml:"commit_command"`
	// RollbackCommand runs when the new version did not reach the server within
	// confirm_timeout (it puts the previous image back), with the same environment; the agent
	// restarts after it. Default none.
	RollbackCommand []string `yaml:"rollback_command"`
	// ConfirmTimeout is how long the new version has, from its start, to reach the server
	// before it is rolled back. Default 10 min; must be positive.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// MinFreeBytes is the free space ota.dir must keep beyond what is left to download of
	// the artifact. Default 0: a tenth of the artifact's size.
	MinFreeBytes int64 `yaml:"min_free_bytes"`
	// MaxArtifactBytes is the largest artifact the device takes. Default 2 GiB.
	MaxArtifactBytes int64 `yaml:"max_artifact_bytes"`
	// DownloadTimeout bounds the download of one artifact, resumptions included. Default
	// 30 min; must be positive.
	DownloadTimeout time.Duration `yaml:"download_timeout"`
	// InstalledImage is a file that holds exactly the artifact the device runs (kept by the
	// installer, e.g. copied there by commit_command). With it the agent asks the server for
	// the new artifact as a delta from it (zstd with the installed image as dictionary),
	// rebuilds the artifact and verifies it like a full download; on any trouble with the
	// delta it downloads the whole artifact. Default none: whole artifacts only.
	InstalledImage string `yaml:"installed_image"`
	// DeltaMaxBytes bounds the installed image and the new artifact together for a delta:
	// the image is read into memory, and decoding keeps a window of up to the power of two
	// above both. Larger: whole artifacts only. Default 64 MiB; must be positive.
	DeltaMaxBytes int64 `yaml:"delta_max_bytes"`
	// PowerCheckCommand runs just before the installer, with the new version in
	// MW_FIRMWARE_VERSION: a non-zero exit (its output says why) refuses the update as
	// failed, reason precheck — e.g. the device runs on battery, or a machine is running.
	// Default none.
	PowerCheckCommand []string `yaml:"power_check_command"`
	// BatteryCapacityFile is a file holding the battery's charge in percent, such as
	// /sys/class/power_supply/BAT0/capacity, read just before the installer; below
	// MinBatteryPercent, or unreadable, the update is refused (precheck). Default none.
	BatteryCapacityFile string `yaml:"battery_capacity_file"`
	// MinBatteryPercent is the least charge BatteryCapacityFile must show. Default 30; 0 to
	// 100.
	MinBatteryPercent int `yaml:"min_battery_percent"`
}

// Defaults of OTAConfig.
const (
	DefaultOTAConfirmTimeout   = 10 * time.Minute
	DefaultOTAMaxArtifactBytes = 2 << 30
	DefaultOTADownloadTimeout  = 30 * time.Minute
	DefaultOTADeltaMaxBytes    = 64 << 20
	DefaultOTAMinBattery       = 30
)

// otaDir is ota.dir or its default.
func (c Config) otaDir() string {
	if c.OTA.Dir != "" {
		return c.OTA.Dir
	}
	return filepath.Join(c.Spool.Dir, "ota")
}

func (o OTAConfig) validate() error {
	for _, c := range []struct {
		key  string
		argv []string
	}{{"ota.install_command", o.InstallCommand}, {"ota.commit_command", o.CommitCommand}, {"ota.rollback_command", o.RollbackCommand}} {
		if len(c.argv) > 0 && c.argv[0] == "" {
			return configErr(c.key, "the first element, the program, is empty")
		}
	}
	switch {
	case o.ConfirmTimeout <= 0:
		return configErr("ota.confirm_timeout", "must be positive, got %v", o.ConfirmTimeout)
	case o.DownloadTimeout <= 0:
		return configErr("ota.download_timeout", "must be positive, got %v", o.DownloadTimeout)
	case o.MinFreeBytes < 0:
		return configErr("ota.min_free_bytes", "must not be negative, got %d", o.MinFreeBytes)
	case o.MaxArtifactBytes <= 0:
		return configErr("ota.max_artifact_bytes", "must be positive, got %d", o.MaxArtifactBytes)
	case o.DeltaMaxBytes <= 0:
		return configErr("ota.delta_max_bytes", "must be positive, got %d", o.DeltaMaxBytes)
	case o.MinBatteryPercent < 0 || o.MinBatteryPercent > 100:
		return configErr("ota.min_battery_percent", "want 0 to 100, got %d", o.MinBatteryPercent)
	case len(o.PowerCheckCommand) > 0 && o.PowerCheckCommand[0] == "":
		return configErr("ota.power_check_command", "the first element, the program, is empty")
	}
	return nil
}

// CommandsConfig enables the commands that reach beyond the agent. Both are off by default.
type CommandsConfig struct {
	// AllowShell lets the server run any shell command on the device (shell.exec, through
	// /bin/sh -c, as the agent's user). Default false: shell.exec is refused.
	AllowShell bool `yaml:"allow_shell"`
	// RebootCommand is the program and arguments that reboot the device, run by
	// system.reboot, such as ["/usr/bin/systemctl", "reboot"]. Default none: system.reboot is
	// refused.
	RebootCommand []string `yaml:"reboot_command"`
}

// IdentityConfig is what the device reports about itself; empty fields are not reported.
type IdentityConfig struct {
	// HardwareModel is the device's hardware model, such as "gw-200". Default: none.
	HardwareModel string `yaml:"hardware_model"`
	// NetworkOperator is the mobile or fixed network the device uses, such as "Telia". Default:
	// none.
	NetworkOperator string `yaml:"network_operator"`
	// FirmwareVersion is the running firmware's version, such as "2.1.0". Default: none.
	FirmwareVersion string `yaml:"firmware_version"`
	// FirmwareVersionFile names a file holding the running firmware's version (surrounding
	// white space ignored), read when the agent starts; it wins over firmware_version, so
	// that a firmware installer can change it. Default: none.
	FirmwareVersionFile string `yaml:"firmware_version_file"`
}

// userProperties returns the identity as MQTT 5 CONNECT user properties.
func (i IdentityConfig) userProperties() paho.UserProperties {
	var up paho.UserProperties
	for _, kv := range [][2]string{
		{protocol.PropHardwareModel, i.HardwareModel},
		{protocol.PropNetworkOperator, i.NetworkOperator},
		{protocol.PropFirmwareVersion, i.FirmwareVersion},
	} {
		if kv[1] != "" {
			up = append(up, paho.UserProperty{Key: kv[0], Value: kv[1]})
		}
	}
	return up
}

// sendIntervalProperty reports the schedule's longest wait between two send cycles at
// connect (protocol.PropSendInterval), so that the server judges the device silent after a
// multiple of its own interval.
func sendIntervalProperty(s ScheduleConfig) paho.UserProperty {
	return paho.UserProperty{Key: protocol.PropSendInterval, Value: (s.Interval + s.Jitter).String()}
}

// TLSConfig names the device's credentials.
type TLSConfig struct {
	// CertFile is the device certificate (PEM; its chain may follow).
	// Required unless the embedding program passes Options.Certificate.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the certificate's private key (PEM). Required with
	// CertFile.
	KeyFile string `yaml:"key_file"`
	// CAFile holds the CA certificates (PEM) that the server's certificate
	// must chain to. Default (empty): the system roots.
	CAFile string `yaml:"ca_file"`
	// ESTServer is the server's HTTPS base URL (https://host:8443) for certificate renewal:
	// when set, the agent re-enrolls with a new key at two-thirds of its certificate's
	// lifetime (EST simplereenroll, authenticated by the current certificate) and switches to
	// the new certificate at the next connection. Default (empty): no renewal.
	ESTServer string `yaml:"est_server"`
	// ServerName is the name the server's certificate must carry. Default
	// (empty): the name the agent connects to, <device-id>.<zone>.
	ServerName string `yaml:"server_name"`
}

// Transport selects the uplink protocol.
type Transport uint8

const (
	// TransportMQTT publishes batches with MQTT 5, QoS 1, over TLS (default).
	TransportMQTT Transport = iota
	// TransportHTTPS POSTs batches to /ingest/v1/batch with mutual TLS.
	TransportHTTPS
)

var transportNames = [...]string{TransportMQTT: "mqtt", TransportHTTPS: "https"}

// String returns "mqtt" or "https".
func (t Transport) String() string {
	if int(t) < len(transportNames) {
		return transportNames[t]
	}
	return "transport(" + strconv.Itoa(int(t)) + ")"
}

// UnmarshalText reads "mqtt" or "https".
func (t *Transport) UnmarshalText(b []byte) error {
	for i, n := range transportNames {
		if string(b) == n {
			*t = Transport(i)
			return nil
		}
	}
	return fmt.Errorf("%q is not a transport; use mqtt or https", b)
}

// MarshalText writes the name.
func (t Transport) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UplinkConfig says how the agent reaches the server.
type UplinkConfig struct {
	// Transport is mqtt (default) or https.
	Transport Transport `yaml:"transport"`
	// Zone is the gateway DNS zone. The agent connects to
	// <device-id>.<zone>, resolved by DNS on every connection, so the
	// operator moves a device by changing its DNS record. Default
	// "gw.millwright.internal".
	Zone string `yaml:"zone"`
	// MQTTPort is the MQTT/TLS port. Default 8883.
	MQTTPort int `yaml:"mqtt_port"`
	// HTTPSPort is the HTTPS port. Default 8443.
	HTTPSPort int `yaml:"https_port"`
	// DevAddress, for development only, replaces the DNS name with a fixed
	// host:port (such as 127.0.0.1:8883). The server certificate is still
	// verified, against TLS.ServerName or <device-id>.<zone>. Default
	// (empty): route by DNS, as every production device must.
	DevAddress string `yaml:"dev_address"`
	// Keepalive is the MQTT keepalive: with no other traffic the agent
	// pings this often, and a connection that stays silent for one more
	// keepalive is dropped and re-established. Whole seconds, at most
	// 65535 s. Keep it below the shortest idle timeout of the carrier NAT
	// or load balancer on the path (docs/agent.md). Default 60 s; 0 turns
	// pings off.
	Keepalive time.Duration `yaml:"keepalive"`
	// ConnectTimeout bounds the TCP connect, the TLS handshake and the
	// MQTT CONNACK together. Default 20 s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// AckTimeout bounds the wait for the server's acknowledgement of one
	// batch (PUBACK or HTTP answer). An MQTT connection whose ack times out
	// is dropped and re-established. Default 30 s.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// Backoff paces reconnects and retries: the n-th consecutive failure
	// waits a uniform random time in [0, min(cap, base·2ⁿ)) (full jitter).
	// Default base 1 s, cap 5 min; zero means the default. Jitter none
	// (plain exponential backoff) is for simulations only.
	Backoff backoff.Policy `yaml:"backoff"`
	// Stable is how long a connection must stay up before the reconnect
	// backoff starts again from base. Default 60 s; 0 resets at once.
	Stable time.Duration `yaml:"stable"`
	// MailboxInterval is, over HTTPS, the longest time between two fetches of the device's
	// mailbox (commands and configuration from the server); the agent also fetches it after
	// every batch it delivers. MQTT receives them as they are sent and does not use it.
	// Default 60 s; must be positive.
	MailboxInterval time.Duration `yaml:"mailbox_interval"`
}

// SpoolConfig places and bounds the durable store (docs/spool.md).
type SpoolConfig struct {
	// Dir is the spool directory; it also holds the batch sequence counter
	// (file mw_seq). Default "/var/lib/millwright-agent/spool".
	Dir string `yaml:"dir"`
	// Options are the spool's own settings (max_bytes, segment_bytes,
	// max_record_bytes, sync, sync_interval, sync_bytes); zero means the
	// spool's default for each.
	spool.Options `yaml:",inline"`
}

// BatchConfig bounds batches and sets the dynamic window.
type BatchConfig struct {
	// MaxRecords closes a batch at this many measurements. Default 1000;
	// at most 10,000 (the server's default limit).
	MaxRecords int `yaml:"max_records"`
	// MaxBytes closes a batch when its measurements, as stored in the
	// spool (uncompressed CBOR), reach this many bytes. Default 65536;
	// at most 4 MiB (the server's limit after decompression).
	MaxBytes int `yaml:"max_bytes"`
	// MinWindow is the shortest batch window: how long the oldest
	// measurement of a batch that is not full waits before the batch is
	// sent anyway. The window starts here and returns here when the agent
	// is idle. Default 5 s; 0 sends every partial batch at the next send.
	MinWindow time.Duration `yaml:"min_window"`
	// MaxWindow is the longest batch window, reached while there is a
	// backlog or the link is slow. Default 10 min; at least MinWindow.
	MaxWindow time.Duration `yaml:"max_window"`
	// SlowLink is the acknowledgement latency (publish → PUBACK, or the
	// HTTP round trip) above which the link counts as slow and the window
	// grows. Default 2 s.
	SlowLink time.Duration `yaml:"slow_link"`
}

// FirstSend says when the first send cycle after start happens.
type FirstSend uint8

const (
	// FirstSendSpread (default) draws the first send from the stationary
	// distribution of the cycle, so agents started together send evenly
	// spread from the first cycle on.
	FirstSendSpread FirstSend = iota
	// FirstSendImmediate sends at once after start, then every cycle. For
	// development and for demonstrating what scatter prevents; never for a
	// fleet.
	FirstSendImmediate
)

var firstSendNames = [...]string{FirstSendSpread: "spread", FirstSendImmediate: "immediate"}

// String returns "spread" or "immediate".
func (f FirstSend) String() string {
	if int(f) < len(firstSendNames) {
		return firstSendNames[f]
	}
	return "first_send(" + strconv.Itoa(int(f)) + ")"
}

// UnmarshalText reads "spread" or "immediate".
func (f *FirstSend) UnmarshalText(b []byte) error {
	for i, n := range firstSendNames {
		if string(b) == n {
			*f = FirstSend(i)
			return nil
		}
	}
	return fmt.Errorf("%q is not a first_send mode; use spread or immediate", b)
}

// MarshalText writes the name.
func (f FirstSend) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// ScheduleConfig is the scattered send schedule.
type ScheduleConfig struct {
	// Interval is the fixed part of the wait between two send cycles.
	// Default 45 s; must be positive.
	Interval time.Duration `yaml:"interval"`
	// Jitter is the random part: each cycle waits Interval plus a uniform
	// random time in [0, Jitter), drawn afresh every cycle. Default 30 s;
	// 0 means none.
	Jitter time.Duration `yaml:"jitter"`
	// FirstSend is spread (default) or immediate.
	FirstSend FirstSend `yaml:"first_send"`
	// MaxBatchesPerCycle bounds the batches sent in one cycle, so a backlog
	// after an outage drains paced instead of in one burst. Default 10.
	MaxBatchesPerCycle int `yaml:"max_batches_per_cycle"`
}

// HealthConfig sets the agent's own health reports.
type HealthConfig struct {
	// Interval is how often the agent_* measurements are written to the
	// spool. Default 60 s; 0 turns them off.
	Interval time.Duration `yaml:"interval"`
}

// LogConfig configures the command's logger.
type LogConfig struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is text (default) or json.
	Format string `yaml:"format"`
}

// SourcesConfig lists the measurement sources (package agent/source). A
// source is on when its key is present; "system: {}" (or just "system:")
// turns the system source on with its defaults.
type SourcesConfig struct {
	// System samples the device itself (CPU, memory, disk, …).
	System *source.SystemOptions `yaml:"system"`
	// Exec runs commands and reads measurements from their output.
	Exec []source.ExecOptions `yaml:"exec"`
	// LocalAPI accepts SenML from programs on the device over loopback HTTP.
	LocalAPI *source.LocalAPIOptions `yaml:"local_api"`
	// Aggregate replaces the raw samples of matching metrics by statistics
	// per window before they reach the spool (edge aggregation, package
	// agent/aggregate). It applies to every source, including those an
	// embedding program passes; the agent's own health measurements are
	// never aggregated.
	Aggregate []aggregate.Rule `yaml:"aggregate"`
}

// Defaults.
const (
	DefaultZone      = "gw.millwright.internal"
	DefaultSpoolDir  = "/var/lib/millwright-agent/spool"
	DefaultMQTTPort  = 8883
	DefaultHTTPSPort = 8443
)

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Uplink: UplinkConfig{
			Transport:       TransportMQTT,
			Zone:            DefaultZone,
			MQTTPort:        DefaultMQTTPort,
			HTTPSPort:       DefaultHTTPSPort,
			Keepalive:       60 * time.Second,
			ConnectTimeout:  20 * time.Second,
			AckTimeout:      30 * time.Second,
			Backoff:         backoff.DefaultPolicy(),
			Stable:          60 * time.Second,
			MailboxInterval: 60 * time.Second,
		},
		Spool: SpoolConfig{Dir: DefaultSpoolDir},
		Batch: BatchConfig{
			MaxRecords: 1000,
			MaxBytes:   64 << 10,
			MinWindow:  5 * time.Second,
			MaxWindow:  10 * time.Minute,
			SlowLink:   2 * time.Second,
		},
		Schedule: ScheduleConfig{
			Interval:           45 * time.Second,
			Jitter:             30 * time.Second,
			FirstSend:          FirstSendSpread,
			MaxBatchesPerCycle: 10,
		},
		Health: HealthConfig{Interval: 60 * time.Second},
		Log:    LogConfig{Level: "info", Format: "text"},
		OTA: OTAConfig{
			ConfirmTimeout:    DefaultOTAConfirmTimeout,
			MaxArtifactBytes:  DefaultOTAMaxArtifactBytes,
			DownloadTimeout:   DefaultOTADownloadTimeout,
			DeltaMaxBytes:     DefaultOTADeltaMaxBytes,
			MinBatteryPercent: DefaultOTAMinBattery,
		},
	}
}

// Limits a batch must respect (the server's default limits).
const (
	maxBatchRecords = 10_000
	maxBatchBytes   = 4 << 20
)

// LoadConfig reads a YAML configuration file, lays it over DefaultConfig,
// validates it and checks that the files it names can be read. Relative
// paths in it (tls.cert_file, tls.key_file, tls.ca_file, spool.dir) are
// relative to the file's directory. Errors wrap ErrConfig and name the key.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("load config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("load config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&cfg.TLS.CertFile, &cfg.TLS.KeyFile, &cfg.TLS.CAFile, &cfg.Spool.Dir,
		&cfg.OTA.TrustedKeysFile, &cfg.OTA.Dir, &cfg.Identity.FirmwareVersionFile, &cfg.OTA.InstalledImage, &cfg.OTA.BatteryCapacityFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if err := cfg.CheckFiles(); err != nil {
		return Config{}, fmt.Errorf("load config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses YAML over DefaultConfig and validates the result. It
// does not touch the file system (see CheckFiles).
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	if err := DecodeYAML(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// KeyError is a configuration error of one key. It wraps ErrConfig and reads
// "invalid agent configuration: <key>: <what is wrong>".
type KeyError struct {
	// Key is the dotted path of the key ("uplink.keepalive", "sources.aggregate[0]").
	Key string
	// Err says what is wrong with it.
	Err error
}

func (e *KeyError) Error() string { return ErrConfig.Error() + ": " + e.Key + ": " + e.Err.Error() }

// Unwrap returns ErrConfig and the cause.
func (e *KeyError) Unwrap() []error { return []error{ErrConfig, e.Err} }

func configErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, args...)}
}

// keyErr wraps err as the error of key.
func keyErr(key string, err error) error { return &KeyError{Key: key, Err: err} }

// Validate checks every value. It does not touch the file system.
func (c Config) Validate() error {
	if c.DeviceID != "" {
		if err := protocol.ValidateDeviceID(c.DeviceID); err != nil {
			return configErr("device_id", "%v", err)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		if c.TLS.CertFile == "" {
			return configErr("tls.cert_file", "required with tls.key_file")
		}
		return configErr("tls.key_file", "required with tls.cert_file")
	}
	u := c.Uplink
	if u.Transport > TransportHTTPS {
		return configErr("uplink.transport", "%d is not a transport", u.Transport)
	}
	if u.DevAddress == "" {
		if err := validateZone(u.Zone); err != nil {
			return configErr("uplink.zone", "%v", err)
		}
	} else {
		host, port, err := net.SplitHostPort(u.DevAddress)
		if err != nil || host == "" || port == "" {
			return configErr("uplink.dev_address", "%q is not host:port", u.DevAddress)
		}
	}
	for _, p := range []struct {
		key string
		v   int
	}{{"uplink.mqtt_port", u.MQTTPort}, {"uplink.https_port", u.HTTPSPort}} {
		if p.v < 1 || p.v > 65535 {
			return configErr(p.key, "%d is not a port (1-65535)", p.v)
		}
	}
	switch {
	case u.Keepalive < 0 || u.Keepalive > 65535*time.Second:
		return configErr("uplink.keepalive", "%v is outside 0-65535s", u.Keepalive)
	case u.Keepalive%time.Second != 0:
		return configErr("uplink.keepalive", "%v is not whole seconds (MQTT counts keepalive in seconds)", u.Keepalive)
	case u.ConnectTimeout <= 0:
		return configErr("uplink.connect_timeout", "must be positive, got %v", u.ConnectTimeout)
	case u.AckTimeout <= 0:
		return configErr("uplink.ack_timeout", "must be positive, got %v", u.AckTimeout)
	case u.Backoff.Base < 0:
		return configErr("uplink.backoff.base", "must not be negative, got %v", u.Backoff.Base)
	case u.Backoff.Cap < 0:
		return configErr("uplink.backoff.cap", "must not be negative, got %v", u.Backoff.Cap)
	case u.Backoff.Cap > 0 && u.Backoff.Base > u.Backoff.Cap:
		return configErr("uplink.backoff.cap", "%v is below uplink.backoff.base %v", u.Backoff.Cap, u.Backoff.Base)
	case u.Backoff.Jitter > backoff.JitterNone:
		return configErr("uplink.backoff.jitter", "%d is not a jitter mode", u.Backoff.Jitter)
	case u.Stable < 0:
		return configErr("uplink.stable", "must not be negative, got %v", u.Stable)
	case u.MailboxInterval <= 0:
		return configErr("uplink.mailbox_interval", "must be positive, got %v", u.MailboxInterval)
	}
	if c.Spool.Dir == "" {
		return configErr("spool.dir", "required")
	}
	if err := c.Spool.Options.Validate(); err != nil {
		// The spool's error names the field with its yaml key.
		return keyErr("spool", err)
	}
	b := c.Batch
	switch {
	case b.MaxRecords < 1 || b.MaxRecords > maxBatchRecords:
		return configErr("batch.max_records", "%d is outside 1-%d", b.MaxRecords, maxBatchRecords)
	case b.MaxBytes < 1024 || b.MaxBytes > maxBatchBytes:
		return configErr("batch.max_bytes", "%d is outside 1024-%d", b.MaxBytes, maxBatchBytes)
	case b.MinWindow < 0:
		return configErr("batch.min_window", "must not be negative, got %v", b.MinWindow)
	case b.MaxWindow < b.MinWindow:
		return configErr("batch.max_window", "%v is below batch.min_window %v", b.MaxWindow, b.MinWindow)
	case b.SlowLink <= 0:
		return configErr("batch.slow_link", "must be positive, got %v", b.SlowLink)
	}
	s := c.Schedule
	switch {
	case s.Interval <= 0:
		return configErr("schedule.interval", "must be positive, got %v", s.Interval)
	case s.Jitter < 0:
		return configErr("schedule.jitter", "must not be negative, got %v", s.Jitter)
	case s.FirstSend > FirstSendImmediate:
		return configErr("schedule.first_send", "%d is not a mode", s.FirstSend)
	case s.MaxBatchesPerCycle < 1:
		return configErr("schedule.max_batches_per_cycle", "must be at least 1, got %d", s.MaxBatchesPerCycle)
	}
	if c.Health.Interval < 0 {
		return configErr("health.interval", "must not be negative, got %v", c.Health.Interval)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return configErr("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return configErr("log.format", "%q is not text or json", c.Log.Format)
	}
	if err := c.Commands.validate(); err != nil {
		return err
	}
	if err := c.OTA.validate(); err != nil {
		return err
	}
	return c.Sources.validate()
}

func (s SourcesConfig) validate() error {
	if s.System != nil {
		if err := s.System.Validate(); err != nil {
			return keyErr("sources.system", err)
		}
	}
	names := map[string]int{}
	for i, e := range s.Exec {
		if err := e.Validate(); err != nil {
			return keyErr(fmt.Sprintf("sources.exec[%d]", i), err)
		}
		if j, dup := names[e.Name]; dup {
			return configErr(fmt.Sprintf("sources.exec[%d].name", i), "%q is already the name of sources.exec[%d]", e.Name, j)
		}
		names[e.Name] = i
	}
	if s.LocalAPI != nil {
		if err := s.LocalAPI.Validate(); err != nil {
			return keyErr("sources.local_api", err)
		}
	}
	for i, r := range s.Aggregate {
		if err := r.Validate(); err != nil {
			return keyErr(fmt.Sprintf("sources.aggregate[%d]", i), err)
		}
	}
	return nil
}

func (c CommandsConfig) validate() error {
	if len(c.RebootCommand) > 0 && c.RebootCommand[0] == "" {
		return configErr("commands.reboot_command", "the first element, the program, is empty")
	}
	return nil
}

// CheckFiles checks that the files the configuration names can be read, so
// that a typo fails at start with the key's name rather than at the first
// connection.
func (c Config) CheckFiles() error {
	for _, f := range []struct{ key, path string }{
		{"tls.cert_file", c.TLS.CertFile},
		{"tls.key_file", c.TLS.KeyFile},
		{"tls.ca_file", c.TLS.CAFile},
		{"ota.trusted_keys_file", c.OTA.TrustedKeysFile},
		{"identity.firmware_version_file", c.Identity.FirmwareVersionFile},
	} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			return configErr(f.key, "%v", err)
		}
		_ = fh.Close()
	}
	return nil
}

func validateZone(zone string) error {
	z := strings.TrimSuffix(zone, ".")
	if z == "" {
		return errors.New("required (or set uplink.dev_address for development)")
	}
	if len(z) > 253-protocol.MaxDeviceIDLen-1 {
		return fmt.Errorf("%q is too long for <device-id>.<zone> to be a DNS name", zone)
	}
	for _, label := range strings.Split(z, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is not a DNS name", zone)
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("%q is not a DNS name", zone)
			}
		}
	}
	if net.ParseIP(z) != nil {
		return fmt.Errorf("%q is an IP address; devices route by name", zone)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch s {
	case "debug", "info", "warn", "error":
		err := l.UnmarshalText([]byte(s))
		return l, err
	}
	return l, fmt.Errorf("%q is not debug, info, warn or error", s)
}

// NewLogger returns the logger the configuration asks for, writing to w.
func (c LogConfig) NewLogger(w interface{ Write([]byte) (int, error) }) *slog.Logger {
	l, _ := c.NewLeveledLogger(w)
	return l
}

// NewLeveledLogger returns the logger the configuration asks for, writing to w, and the
// variable that holds its level. Pass the variable as Options.LogLevel, so that the
// server's remote configuration can change the level while the agent runs.
func (c LogConfig) NewLeveledLogger(w interface{ Write([]byte) (int, error) }) (*slog.Logger, *slog.LevelVar) {
	level, _ := parseLevel(c.Level)
	lv := new(slog.LevelVar)
	lv.Set(level)
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), lv
	}
	return slog.New(slog.NewTextHandler(w, opts)), lv
}
