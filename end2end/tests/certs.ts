// Certificates for the console's X.509 tests, made with the openssl command line (P-256 keys):
// each is written as <prefix>.pem and <prefix>-key.pem, the files register.js reads with --x509.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onramp-e2e-certs-'));
const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

function openssl(args: string[]) {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

export interface Cert { prefix: string; pem: string }

function read(prefix: string): Cert {
  return { prefix, pem: fs.readFileSync(`${prefix}.pem`, 'utf8') };
}

/// A self-signed certificate: a CA (`ca`) or a device's own leaf.
export function selfSigned(name: string, cn: string, ca: boolean): Cert {
  const prefix = path.join(dir, name);
  const extensions = ca
    ? ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature']
    : ['-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'extendedKeyUsage=clientAuth'];
  openssl(['req', '-x509', ...newKey, '-keyout', `${prefix}-key.pem`, '-out', `${prefix}.pem`,
    '-days', '30', '-subj', `/CN=${cn}`, ...extensions]);
  return read(prefix);
}

/// A certificate with subject `cn` signed by `issuer` (a device, or a proof of possession).
export function signedBy(issuer: Cert, name: string, cn: string): Cert {
  const prefix = path.join(dir, name);
  openssl(['req', '-new', ...newKey, '-keyout', `${prefix}-key.pem`, '-out', `${prefix}.csr`, '-subj', `/CN=${cn}`]);
  // Extensions make it a v3 certificate (certificate path validation refuses v1).
  const extensions = `${prefix}.ext`;
  fs.writeFileSync(extensions, 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
  openssl(['x509', '-req', '-in', `${prefix}.csr`, '-CA', `${issuer.prefix}.pem`, '-CAkey', `${issuer.prefix}-key.pem`,
    '-CAcreateserial', '-out', `${prefix}.pem`, '-days', '1', '-extfile', extensions]);
  return read(prefix);
}

/// A device's fresh P-256 key and its CSR (subject CN `cn`), as base64 DER for a register request.
export function csrFor(name: string, cn: string): { prefix: string; csr: string } {
  const prefix = path.join(dir, name);
  openssl(['req', '-new', ...newKey, '-keyout', `${prefix}-key.pem`, '-outform', 'DER', '-out', `${prefix}.csr`, '-subj', `/CN=${cn}`]);
  return { prefix, csr: fs.readFileSync(`${prefix}.csr`).toString('base64') };
}
