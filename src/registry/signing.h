// registry/signing.h — detached model signatures and signed log checkpoints.
//
// Model signatures follow the OpenSSF Model Signing (OMS) v1.0 "key" method, the format the
// `model_signing` tool reads and writes, so signatures cross between the two: an in-toto
// Statement listing every file's SHA-256, wrapped in a DSSE envelope, signed with ECDSA P-256 and
// stored as a Sigstore bundle v0.3 (JSON). Log checkpoints are C2SP signed notes with the ECDSA key hint Rekor uses.
// Only P-256 keys are accepted: one curve keeps the trust list and the key ids unambiguous.
//
// Keys, key lists and bundles are immutable once built; their const methods may be called from
// any thread.
#pragma once

#include <openssl/types.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/digest.h"
#include "core/error.h"

namespace bulwark::registry {

// A bundle, checkpoint or file set that does not verify. `check` names the step that failed, so
// callers can branch and reports can say why without parsing the message:
//   "bundle", "untrusted-key", "signature", "statement" — verify_bundle, in the order it checks;
//   "files", "digest" — verify_files; "checkpoint" — open_note.
// It is a bulwark::Error of kind kDataFormat, so frontends that map Error handle it unchanged.
struct SignatureError : Error {
  SignatureError(std::string check_name, const std::string& message)
      : Error(ErrorKind::kDataFormat, message), check(std::move(check_name)) {}
  std::string check;
};

// Base64 (RFC 4648 §4, canonical form only) is OpenSSL's, in core/digest.h.
using bulwark::base64_decode;
using bulwark::base64_encode;

namespace detail {
struct PkeyFree {
  void operator()(EVP_PKEY* key) const;
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
}  // namespace detail

// Writes a new P-256 key pair: the private key as unencrypted PKCS#8 PEM, created with mode 0600
// (never briefly readable by others), and the public key as SubjectPublicKeyInfo PEM, mode 0644.
// Refuses to overwrite either file.
void generate_key_pair(const std::string& private_path, const std::string& public_path);

class PublicKey {
 public:
  // `what` names the source (a file path, "request body") in error messages.
  static PublicKey from_pem(const std::string& pem, const std::string& what);

  // Canonical PEM (re-encoded by OpenSSL), so the id does not depend on the file's whitespace.
  const std::string& pem() const { return pem_; }
  const std::string& key_id() const { return key_id_; }
  std::string spki_der() const;
  // True when `der_signature` is a valid ECDSA signature over SHA-256(message); malformed
  // signatures are simply invalid.
  bool verify(std::string_view message, std::string_view der_signature) const;

 private:
  PublicKey(detail::PkeyPtr key, std::string pem, std::string key_id)
      : key_(std::move(key)), pem_(std::move(pem)), key_id_(std::move(key_id)) {}
  std::shared_ptr<EVP_PKEY> key_;  // shared: copies of a trusted key are cheap and read-only
  std::string pem_;
  std::string key_id_;
};

class SigningKey {
 public:
  // Refuses a key file readable or writable by group or others, as ssh does: a leaked signing key
  // lets anyone publish models we would trust.
  static SigningKey load(const std::string& private_path);

  // SPKI PEM exactly as OpenSSL (and Python's cryptography) write it; key ids hash these bytes.
  std::string public_pem() const;
  // Lowercase hex SHA-256 of public_pem(): the OMS bundle's verificationMaterial.publicKey.hint.
  std::string key_id() const;
  // The public half alone, e.g. to trust one's own signatures.
  PublicKey public_key() const;
  // DER-encoded ECDSA signature over SHA-256(message).
  std::string sign(std::string_view message) const;

 private:
  explicit SigningKey(detail::PkeyPtr key) : key_(std::move(key)) {}
  detail::PkeyPtr key_;
};

// The public keys whose signatures we accept, by key id. Rotating a key means adding the new one,
// re-signing, then removing the old file.
class TrustList {
 public:
  // Every `*.pub` file in `dir`; throws not_found for a missing directory and data_format naming
  // the file for one that is not a P-256 public key.
  static TrustList load_dir(const std::string& dir);

  // Adding a key that is already present is a no-op.
  void add(PublicKey key);
  const PublicKey* find(const std::string& key_id) const;
  std::vector<std::string> key_ids() const;  // sorted
  size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, PublicKey> keys_;
};

struct FileDigest {
  std::string name;        // path relative to the model directory, '/'-separated
  std::string sha256_hex;  // 64 lowercase hex characters
};

// DSSE v1 pre-authentication encoding: what is actually signed, binding the payload's type.
std::string dsse_pae(std::string_view payload_type, std::string_view payload);

// The OMS v1.0 in-toto Statement for a model made of `files` (sorted by name inside). The
// subject digest is SHA-256 over the files' raw 32-byte digests in that order. Throws
// invalid_argument for no files, a name that is not a plain relative path (empty, absolute, "..")
// or is listed twice, or a digest that is not 64 lowercase hex.
std::string make_statement(const std::string& model_name, std::vector<FileDigest> files);

// A Sigstore bundle v0.3 (JSON) carrying the signed statement and the signer's key id.
std::string sign_bundle(const SigningKey& key, const std::string& model_name, const std::vector<FileDigest>& files);

struct VerifiedBundle {
  std::string key_id;
  std::string model_name;
  std::string root_digest;
  std::vector<FileDigest> files;  // in the statement's order
};

// Checks, in order: the bundle's shape ("bundle"), that its key is trusted ("untrusted-key"), the
// signature ("signature"), and the statement ("statement"). Throws SignatureError on the first
// failure. Says nothing about files on disk: call verify_files for that.
VerifiedBundle verify_bundle(const std::string& bundle_json, const TrustList& trust);

// Checks that `name_to_path` covers exactly the signed files ("files") and that each file's
// SHA-256 is the signed one ("digest").
void verify_files(const VerifiedBundle& verified, const std::map<std::string, std::string>& name_to_path);
// The same checks on files already in memory (name -> bytes): what is hashed is what is used.
void verify_contents(const VerifiedBundle& verified, const std::map<std::string, std::string>& name_to_bytes);

// C2SP signed note: `body` (ending in '\n', no blank line), a blank line, then
// "— <key_name> base64(key hint || DER signature over SHA-256(body))\n", the key hint being the
// first 4 bytes of SHA-256(DER SPKI) as in Rekor checkpoints.
std::string sign_note(const std::string& body, const std::string& key_name, const SigningKey& key);
// Returns the body when some signature line from `key_name` with `key`'s hint verifies; throws
// SignatureError "checkpoint" otherwise.
std::string open_note(const std::string& note, const std::string& key_name, const PublicKey& key);

}  // namespace bulwark::registry
