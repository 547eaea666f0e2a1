package deep

import "slices"

// suite is a TLS 1.0-1.2 cipher suite the probes may offer.
type suite struct {
	id    uint16
	name  string // IANA name
	kx    kx
	enc   enc
	tls12 bool // defined for TLS 1.2 only (SHA-256/384 MACs, AEAD)
}

type kx int

const (
	kxECDHE kx = iota
	kxDHE
	kxRSA
)

type enc int

const (
	encAEAD enc = iota
	encCBC      // AES, Camellia, SEED in CBC mode
	enc3DES     // 3DES in CBC mode
	encRC4
	encNULL
	encExport // 40- and 56-bit export ciphers, whatever their mode
)

// suites are every suite the probes know, strongest first: the order in
// which the "preferred suite" hello offers them.
var suites = []suite{
	{0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", kxECDHE, encAEAD, true},
	{0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", kxECDHE, encAEAD, true},
	{0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", kxECDHE, encAEAD, true},
	{0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", kxECDHE, encAEAD, true},
	{0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", kxECDHE, encAEAD, true},
	{0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", kxECDHE, encAEAD, true},
	{0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", kxECDHE, encCBC, true},
	{0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", kxECDHE, encCBC, true},
	{0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", kxECDHE, encCBC, true},
	{0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", kxECDHE, encCBC, true},
	{0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", kxECDHE, encCBC, false},
	{0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", kxECDHE, encCBC, false},
	{0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", kxECDHE, encCBC, false},
	{0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", kxECDHE, encCBC, false},
	{0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", kxDHE, encAEAD, true},
	{0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", kxDHE, encAEAD, true},
	{0xccaa, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", kxDHE, encAEAD, true},
	{0x00a2, "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256", kxDHE, encAEAD, true},
	{0x00a3, "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384", kxDHE, encAEAD, true},
	{0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", kxDHE, encCBC, true},
	{0x006b, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", kxDHE, encCBC, true},
	{0x0040, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256", kxDHE, encCBC, true},
	{0x006a, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256", kxDHE, encCBC, true},
	{0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", kxDHE, encCBC, false},
	{0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", kxDHE, encCBC, false},
	{0x0032, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA", kxDHE, encCBC, false},
	{0x0038, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA", kxDHE, encCBC, false},
	{0x0045, "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA", kxDHE, encCBC, false},
	{0x0088, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA", kxDHE, encCBC, false},
	{0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256", kxRSA, encAEAD, true},
	{0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384", kxRSA, encAEAD, true},
	{0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256", kxRSA, encCBC, true},
	{0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256", kxRSA, encCBC, true},
	{0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA", kxRSA, encCBC, false},
	{0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", kxRSA, encCBC, false},
	{0x0041, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA", kxRSA, encCBC, false},
	{0x0084, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA", kxRSA, encCBC, false},
	{0x0096, "TLS_RSA_WITH_SEED_CBC_SHA", kxRSA, encCBC, false},
	{0xc012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", kxECDHE, enc3DES, false},
	{0xc008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA", kxECDHE, enc3DES, false},
	{0x0016, "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA", kxDHE, enc3DES, false},
	{0x0013, "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA", kxDHE, enc3DES, false},
	{0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", kxRSA, enc3DES, false},
	{0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA", kxECDHE, encRC4, false},
	{0xc007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", kxECDHE, encRC4, false},
	{0x0005, "TLS_RSA_WITH_RC4_128_SHA", kxRSA, encRC4, false},
	{0x0004, "TLS_RSA_WITH_RC4_128_MD5", kxRSA, encRC4, false},
	{0xc010, "TLS_ECDHE_RSA_WITH_NULL_SHA", kxECDHE, encNULL, false},
	{0xc006, "TLS_ECDHE_ECDSA_WITH_NULL_SHA", kxECDHE, encNULL, false},
	{0x003b, "TLS_RSA_WITH_NULL_SHA256", kxRSA, encNULL, true},
	{0x0002, "TLS_RSA_WITH_NULL_SHA", kxRSA, encNULL, false},
	{0x0001, "TLS_RSA_WITH_NULL_MD5", kxRSA, encNULL, false},
	{0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5", kxRSA, encExport, false},
	{0x0006, "TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5", kxRSA, encExport, false},
	{0x0008, "TLS_RSA_EXPORT_WITH_DES40_CBC_SHA", kxRSA, encExport, false},
	{0x0014, "TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA", kxDHE, encExport, false},
	{0x0011, "TLS_DHE_DSS_EXPORT_WITH_DES40_CBC_SHA", kxDHE, encExport, false},
	{0x0062, "TLS_RSA_EXPORT1024_WITH_DES_CBC_SHA", kxRSA, encExport, false},
	{0x0064, "TLS_RSA_EXPORT1024_WITH_RC4_56_SHA", kxRSA, encExport, false},
	{0x0063, "TLS_DHE_DSS_EXPORT1024_WITH_DES_CBC_SHA", kxDHE, encExport, false},
}

// tls13Suites are offered (with TLS 1.3 in supported_versions) only to
// learn the server's highest version, for the fallback probe.
var tls13Suites = []uint16{0x1301, 0x1302, 0x1303}

// pick returns the ids of the suites for which keep is true, in order.
func pick(keep func(suite) bool) []uint16 {
	var ids []uint16
	for _, s := range suites {
		if keep(s) {
			ids = append(ids, s.id)
		}
	}
	return ids
}

// usual is what an ordinary client offers: no NULL and no EXPORT suite.
func usual(s suite) bool { return s.enc != encNULL && s.enc != encExport }

// SuiteName names a suite by its IANA name, or by its number.
func SuiteName(id uint16) string {
	if i := slices.IndexFunc(suites, func(s suite) bool { return s.id == id }); i >= 0 {
		return suites[i].name
	}
	switch id {
	case 0x1301:
		return "TLS_AES_128_GCM_SHA256"
	case 0x1302:
		return "TLS_AES_256_GCM_SHA384"
	case 0x1303:
		return "TLS_CHACHA20_POLY1305_SHA256"
	}
	return "0x" + hex4(id)
}

func hex4(v uint16) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[v>>12], digits[v>>8&15], digits[v>>4&15], digits[v&15]})
}
