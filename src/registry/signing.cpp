#include "registry/signing.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <functional>
#include <set>

#include "core/digest.h"
#include "core/files.h"

namespace bulwark::registry {

void detail::PkeyFree::operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }

namespace {

using detail::PkeyPtr;
using nlohmann::json;

constexpr char kBundleMediaType[] = "application/vnd.dev.sigstore.bundle.v0.3+json";
constexpr char kPayloadType[] = "application/vnd.in-toto+json";
constexpr char kStatementType[] = "https://in-toto.io/Statement/v1";
constexpr char kPredicateType[] = "https://model_signing/signature/v1.0";
constexpr std::string_view kNoteSignaturePrefix = "\xE2\x80\x94 ";  // U+2014 em dash, then a space
constexpr size_t kNoteKeyHintBytes = 4;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

std::string errno_text() { return std::strerror(errno); }

// OpenSSL queues errors per thread: take the first for the message and drop the rest, so a stale
// entry cannot leak into a later, unrelated failure.
std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

[[noreturn]] void fail(const char* check, const std::string& message) { throw SignatureError(check, message); }

// Attacker-controlled strings are cut short before they reach a message.
std::string clip(std::string_view s) {
  constexpr size_t kMax = 80;
  return s.size() <= kMax ? std::string(s) : std::string(s.substr(0, kMax)) + "...";
}

BioPtr memory_bio(const std::string& bytes) {
  BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
  if (!bio) throw internal_error("cannot allocate an OpenSSL buffer");
  return bio;
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string public_pem_of(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1)
    throw internal_error("cannot encode public key: " + openssl_error());
  return bio_text(bio.get());
}

// Empty when `key` is an ECDSA P-256 key, else what it is instead.
std::string not_p256(EVP_PKEY* key) {
  if (!EVP_PKEY_is_a(key, "EC")) {
    const char* type = EVP_PKEY_get0_type_name(key);
    return std::string("a key of type ") + (type ? type : "unknown");
  }
  char group[80] = {};
  size_t length = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &length) != 1) {
    ERR_clear_error();
    return "an EC key with explicit curve parameters";
  }
  if (std::strcmp(group, "prime256v1") != 0) return std::string("an EC key on curve ") + group;
  return "";
}

// Never prompt: an encrypted key must fail to load, not block on a terminal.
int refuse_passphrase(char*, int, int, void*) { return -1; }

// O_EXCL: never replace an existing key, never follow a symlink planted at the path; and the mode
// is set at creation, so a private key is never readable by others, even briefly.
void write_new_file(const std::string& path, const std::string& bytes, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0 && errno == EEXIST) throw invalid_argument(path + " already exists; refusing to overwrite a key file");
  if (fd < 0) throw io_error("cannot create " + path + ": " + errno_text());
  const bool written =
      ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) && ::fsync(fd) == 0;
  const std::string why = errno_text();
  if (::close(fd) != 0 || !written) {
    ::unlink(path.c_str());
    throw io_error("cannot write " + path + ": " + why);
  }
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Expects text already checked by is_sha256_hex (or produced by sha256_hex).
// Names become paths under the model directory, so only plain relative paths are allowed.
bool is_safe_relative_path(const std::string& name) {
  if (name.empty() || name.front() == '/' || name.back() == '/') return false;
  size_t start = 0;
  while (start <= name.size()) {
    const size_t end = std::min(name.find('/', start), name.size());
    const std::string_view part(name.data() + start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// Empty when `files` can be signed, else what is wrong with them.
std::string file_list_problem(const std::vector<FileDigest>& files) {
  if (files.empty()) return "no files";
  std::set<std::string> seen;
  for (const auto& f : files) {
    if (!is_safe_relative_path(f.name)) return "file name \"" + clip(f.name) + "\" is not a plain relative path";
    if (!seen.insert(f.name).second) return "file " + clip(f.name) + " is listed twice";
    if (!is_sha256_hex(f.sha256_hex)) return "file " + clip(f.name) + ": digest is not 64 lowercase hex characters";
  }
  return "";
}

// SHA-256 over the raw digests in the given order, as OMS v1.0 computes the subject digest.
std::string root_digest(const std::vector<FileDigest>& files) {
  std::string raw;
  raw.reserve(32 * files.size());
  for (const auto& f : files) raw += hex_decode(f.sha256_hex);
  return sha256_hex(raw);
}

// The bundle and statement are untrusted: every lookup names the field it wanted, as a path from
// the document's root ("" for the root itself).
const json& field(const json& parent, const char* name, json::value_t type, const char* check,
                  const std::string& where) {
  const std::string path = where.empty() ? name : where + "." + name;
  const auto it = parent.find(name);
  if (it == parent.end()) fail(check, std::string(check) + " field " + path + " is missing");
  if (it->type() != type)
    fail(check, std::string(check) + " field " + path + " is not a JSON " + json(type).type_name());
  return *it;
}

const std::string& string_field(const json& parent, const char* name, const char* check, const std::string& where) {
  return field(parent, name, json::value_t::string, check, where).get_ref<const std::string&>();
}

std::string decode_field(const std::string& text, const std::string& where) {
  try {
    return base64_decode(text);
  } catch (const Error& e) {
    fail("bundle", "bundle field " + where + " is not valid base64: " + e.what());
  }
}

std::vector<FileDigest> statement_resources(const json& predicate) {
  const json& serialization = field(predicate, "serialization", json::value_t::object, "statement", "predicate");
  const std::string& method = string_field(serialization, "method", "statement", "predicate.serialization");
  if (method != "files") {
    fail("statement",
         "statement field predicate.serialization.method is \"" + clip(method) + "\"; only \"files\" is supported");
  }
  std::vector<FileDigest> files;
  for (const json& r : field(predicate, "resources", json::value_t::array, "statement", "predicate")) {
    const std::string where = "predicate.resources[" + std::to_string(files.size()) + "]";
    if (!r.is_object()) fail("statement", "statement field " + where + " is not a JSON object");
    const std::string& algorithm = string_field(r, "algorithm", "statement", where);
    if (algorithm != "sha256")
      fail("statement", "statement field " + where + ".algorithm is \"" + clip(algorithm) + "\", expected sha256");
    files.push_back({string_field(r, "name", "statement", where), string_field(r, "digest", "statement", where)});
  }
  if (const std::string problem = file_list_problem(files); !problem.empty()) {
    fail("statement", "statement field predicate.resources: " + problem);
  }
  return files;
}

VerifiedBundle parse_statement(const std::string& payload_type, const std::string& payload) {
  if (payload_type != kPayloadType) {
    fail("statement",
         "bundle field dsseEnvelope.payloadType is \"" + clip(payload_type) + "\", expected " + kPayloadType);
  }
  const json statement = json::parse(payload, nullptr, false);
  if (!statement.is_object()) fail("statement", "the signed payload is not a JSON object");
  const std::string& type = string_field(statement, "_type", "statement", "");
  if (type != kStatementType)
    fail("statement", "statement field _type is \"" + clip(type) + "\", expected " + kStatementType);
  const std::string& predicate_type = string_field(statement, "predicateType", "statement", "");
  if (predicate_type != kPredicateType) {
    fail("statement", "statement field predicateType is \"" + clip(predicate_type) + "\", expected " + kPredicateType);
  }
  const json& subjects = field(statement, "subject", json::value_t::array, "statement", "");
  if (subjects.size() != 1 || !subjects[0].is_object()) {
    fail("statement", "statement field subject must hold exactly one object, found " + std::to_string(subjects.size()));
  }
  VerifiedBundle v;
  v.model_name = string_field(subjects[0], "name", "statement", "subject[0]");
  const json& digest = field(subjects[0], "digest", json::value_t::object, "statement", "subject[0]");
  v.root_digest = string_field(digest, "sha256", "statement", "subject[0].digest");
  v.files = statement_resources(field(statement, "predicate", json::value_t::object, "statement", ""));
  // Hashed in the order listed, as the OMS verifier does; our signer lists them sorted by name.
  const std::string recomputed = root_digest(v.files);
  if (recomputed != v.root_digest) {
    fail("statement", "statement field subject[0].digest.sha256 " + clip(v.root_digest) +
                          " does not match the digest of the listed resources " + recomputed);
  }
  return v;
}

std::string note_body_problem(const std::string& body) {
  if (body.empty() || body.back() != '\n') return "note body must end with a newline";
  if (body.front() == '\n' || body.find("\n\n") != std::string::npos) return "note body must not contain a blank line";
  return "";
}

// C2SP signed-note key names: non-empty, no spaces, no '+'.
bool is_note_key_name(const std::string& name) {
  return !name.empty() && name.find_first_of(" \t\n\r+") == std::string::npos;
}

std::string note_key_hint(const PublicKey& key) {
  return hex_decode(sha256_hex(key.spki_der())).substr(0, kNoteKeyHintBytes);
}

}  // namespace


void generate_key_pair(const std::string& private_path, const std::string& public_path) {
  if (private_path == public_path) throw invalid_argument("private and public key paths are both " + private_path);
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) throw internal_error("P-256 key generation failed: " + openssl_error());
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    throw internal_error("cannot encode private key: " + openssl_error());
  }
  write_new_file(private_path, bio_text(bio.get()), 0600);
  try {
    write_new_file(public_path, public_pem_of(key.get()), 0644);
  } catch (...) {
    ::unlink(private_path.c_str());  // a private key without its public half is of no use
    throw;
  }
}

PublicKey PublicKey::from_pem(const std::string& pem, const std::string& what) {
  BioPtr bio = memory_bio(pem);
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, refuse_passphrase, nullptr));
  if (!key) {
    throw data_format(what + ": not a PEM public key (-----BEGIN PUBLIC KEY-----): " + openssl_error());
  }
  if (const std::string other = not_p256(key.get()); !other.empty()) {
    throw data_format(what + ": " + other + "; only ECDSA P-256 keys are supported");
  }
  std::string canonical = public_pem_of(key.get());
  std::string id = sha256_hex(canonical);
  return PublicKey(std::move(key), std::move(canonical), std::move(id));
}

std::string PublicKey::spki_der() const {
  const int length = i2d_PUBKEY(key_.get(), nullptr);
  if (length <= 0) throw internal_error("cannot encode public key as DER: " + openssl_error());
  std::string der(static_cast<size_t>(length), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_PUBKEY(key_.get(), &out) != length)
    throw internal_error("cannot encode public key as DER: " + openssl_error());
  return der;
}

bool PublicKey::verify(std::string_view message, std::string_view der_signature) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1) {
    throw internal_error("cannot start ECDSA verification: " + openssl_error());
  }
  const int rc =
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der_signature.data()), der_signature.size(),
                       reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();  // a malformed signature queues a decoding error; it is just "invalid" here
  return rc == 1;
}

SigningKey SigningKey::load(const std::string& private_path) {
  struct stat st {};
  if (::stat(private_path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw not_found(private_path + ": no such private key file");
    throw io_error("cannot stat private key " + private_path + ": " + errno_text());
  }
  if (!S_ISREG(st.st_mode)) throw invalid_argument(private_path + ": not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw invalid_argument(private_path + ": permissions " + mode +
                           " are too open; the private key must not be readable by group or others (chmod 600)");
  }
  const std::string pem = read_file(private_path);
  BioPtr bio = memory_bio(pem);  // borrows `pem`, so it must outlive the BIO
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase, nullptr));
  if (!key) {
    throw data_format(
        private_path +
        ": not an unencrypted PEM private key (passphrase-protected keys are not supported): " + openssl_error());
  }
  if (const std::string other = not_p256(key.get()); !other.empty()) {
    throw data_format(private_path + ": " + other + "; only ECDSA P-256 keys are supported");
  }
  return SigningKey(std::move(key));
}

std::string SigningKey::public_pem() const { return public_pem_of(key_.get()); }

std::string SigningKey::key_id() const { return sha256_hex(public_pem()); }

PublicKey SigningKey::public_key() const { return PublicKey::from_pem(public_pem(), "signing key"); }

std::string SigningKey::sign(std::string_view message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t length = static_cast<size_t>(EVP_PKEY_get_size(key_.get()));
  std::string signature(length, '\0');
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    throw internal_error("ECDSA signing failed: " + openssl_error());
  }
  signature.resize(length);
  return signature;
}

TrustList TrustList::load_dir(const std::string& dir) {
  if (!directory_exists(dir)) throw not_found(dir + ": no such trusted-keys directory");
  namespace fs = std::filesystem;
  std::vector<std::string> paths;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".pub" && it->is_regular_file(ec)) paths.push_back(it->path().string());
  }
  if (ec) throw io_error("cannot list " + dir + ": " + ec.message());
  std::sort(paths.begin(), paths.end());
  TrustList trust;
  for (const auto& path : paths) trust.add(PublicKey::from_pem(read_file(path), path));
  return trust;
}

void TrustList::add(PublicKey key) {
  const std::string id = key.key_id();
  keys_.emplace(id, std::move(key));
}

const PublicKey* TrustList::find(const std::string& key_id) const {
  const auto it = keys_.find(key_id);
  return it == keys_.end() ? nullptr : &it->second;
}

std::vector<std::string> TrustList::key_ids() const {
  std::vector<std::string> ids;
  for (const auto& entry : keys_) ids.push_back(entry.first);
  return ids;
}

std::string dsse_pae(std::string_view payload_type, std::string_view payload) {
  std::string pae = "DSSEv1 " + std::to_string(payload_type.size()) + " ";
  pae.append(payload_type);
  pae += " " + std::to_string(payload.size()) + " ";
  pae.append(payload);
  return pae;
}

std::string make_statement(const std::string& model_name, std::vector<FileDigest> files) {
  if (model_name.empty()) throw invalid_argument("model name is empty");
  if (const std::string problem = file_list_problem(files); !problem.empty()) {
    throw invalid_argument("cannot sign model " + model_name + ": " + problem);
  }
  std::sort(files.begin(), files.end(), [](const FileDigest& a, const FileDigest& b) { return a.name < b.name; });
  json resources = json::array();
  for (const auto& f : files)
    resources.push_back({{"name", f.name}, {"algorithm", "sha256"}, {"digest", f.sha256_hex}});
  const json subject = {{"name", model_name}, {"digest", {{"sha256", root_digest(files)}}}};
  const json serialization = {
      {"method", "files"}, {"hash_type", "sha256"}, {"allow_symlinks", false}, {"ignore_paths", json::array()}};
  const json statement = {{"_type", kStatementType},
                          {"subject", json::array({subject})},
                          {"predicateType", kPredicateType},
                          {"predicate", {{"serialization", serialization}, {"resources", resources}}}};
  try {
    return statement.dump();
  } catch (const json::type_error&) {
    throw invalid_argument("cannot sign model " + model_name + ": model and file names must be valid UTF-8");
  }
}

std::string sign_bundle(const SigningKey& key, const std::string& model_name, const std::vector<FileDigest>& files) {
  const std::string statement = make_statement(model_name, files);
  const json signature = {{"sig", base64_encode(key.sign(dsse_pae(kPayloadType, statement)))}, {"keyid", ""}};
  const json bundle = {
      {"mediaType", kBundleMediaType},
      {"verificationMaterial", {{"publicKey", {{"hint", key.key_id()}}}, {"tlogEntries", json::array()}}},
      {"dsseEnvelope",
       {{"payload", base64_encode(statement)},
        {"payloadType", kPayloadType},
        {"signatures", json::array({signature})}}}};
  return bundle.dump(2) + "\n";
}

VerifiedBundle verify_bundle(const std::string& bundle_json, const TrustList& trust) {
  const json bundle = json::parse(bundle_json, nullptr, false);
  if (bundle.is_discarded()) fail("bundle", "the signature bundle is not valid JSON");
  if (!bundle.is_object()) fail("bundle", "the signature bundle is not a JSON object");
  const std::string& media_type = string_field(bundle, "mediaType", "bundle", "");
  if (media_type != kBundleMediaType) {
    fail("bundle", "bundle field mediaType is \"" + clip(media_type) + "\", expected " + kBundleMediaType);
  }
  const json& material = field(bundle, "verificationMaterial", json::value_t::object, "bundle", "");
  const json& public_key = field(material, "publicKey", json::value_t::object, "bundle", "verificationMaterial");
  const std::string& key_id = string_field(public_key, "hint", "bundle", "verificationMaterial.publicKey");
  if (!is_sha256_hex(key_id))
    fail("bundle", "bundle field verificationMaterial.publicKey.hint is not a SHA-256 key id");
  const json& envelope = field(bundle, "dsseEnvelope", json::value_t::object, "bundle", "");
  const std::string& payload_type = string_field(envelope, "payloadType", "bundle", "dsseEnvelope");
  const json& signatures = field(envelope, "signatures", json::value_t::array, "bundle", "dsseEnvelope");
  if (signatures.size() != 1 || !signatures[0].is_object()) {
    fail("bundle", "bundle field dsseEnvelope.signatures must hold exactly one object, found " +
                       std::to_string(signatures.size()));
  }
  const std::string payload =
      decode_field(string_field(envelope, "payload", "bundle", "dsseEnvelope"), "dsseEnvelope.payload");
  const std::string signature = decode_field(string_field(signatures[0], "sig", "bundle", "dsseEnvelope.signatures[0]"),
                                             "dsseEnvelope.signatures[0].sig");

  const PublicKey* key = trust.find(key_id);
  if (key == nullptr) {
    fail("untrusted-key", "bundle is signed by key " + key_id + ", which is not among the " +
                              std::to_string(trust.size()) + " trusted keys");
  }
  if (!key->verify(dsse_pae(payload_type, payload), signature)) {
    fail("signature", "the bundle's signature does not verify with key " + key_id +
                          ": the signed statement or the signature was altered");
  }
  VerifiedBundle verified = parse_statement(payload_type, payload);
  verified.key_id = key_id;
  return verified;
}

namespace {

// verify_files and verify_contents: `named` covers exactly the signed files, and `digest_of(name)`
// is each one's signed SHA-256.
void verify_named(const VerifiedBundle& verified, const std::map<std::string, std::string>& named,
                  const std::function<std::string(const std::string&)>& digest_of) {
  std::set<std::string> signed_names;
  for (const auto& f : verified.files) {
    if (named.count(f.name) == 0) fail("files", "signed file " + f.name + " is missing");
    signed_names.insert(f.name);
  }
  for (const auto& entry : named) {
    if (signed_names.count(entry.first) == 0) fail("files", "file " + entry.first + " is not covered by the signature");
  }
  for (const auto& f : verified.files) {
    const std::string actual = digest_of(f.name);
    if (actual != f.sha256_hex) {
      fail("digest", f.name + ": SHA-256 is " + actual.substr(0, 12) + "..., but the signed digest is " +
                         f.sha256_hex.substr(0, 12) + "...");
    }
  }
}

}  // namespace

void verify_files(const VerifiedBundle& verified, const std::map<std::string, std::string>& name_to_path) {
  verify_named(verified, name_to_path, [&](const std::string& name) { return sha256_file_hex(name_to_path.at(name)); });
}

void verify_contents(const VerifiedBundle& verified, const std::map<std::string, std::string>& name_to_bytes) {
  verify_named(verified, name_to_bytes, [&](const std::string& name) { return sha256_hex(name_to_bytes.at(name)); });
}

std::string sign_note(const std::string& body, const std::string& key_name, const SigningKey& key) {
  if (const std::string problem = note_body_problem(body); !problem.empty()) throw invalid_argument(problem);
  if (!is_note_key_name(key_name)) {
    throw invalid_argument("note key name \"" + clip(key_name) + "\" must be non-empty, without spaces or '+'");
  }
  const std::string blob = note_key_hint(key.public_key()) + key.sign(body);
  return body + "\n" + std::string(kNoteSignaturePrefix) + key_name + " " + base64_encode(blob) + "\n";
}

std::string open_note(const std::string& note, const std::string& key_name, const PublicKey& key) {
  const size_t split = note.rfind("\n\n");
  if (split == std::string::npos) fail("checkpoint", "note has no signature block");
  std::string body = note.substr(0, split + 1);
  if (const std::string problem = note_body_problem(body); !problem.empty()) fail("checkpoint", problem);
  std::string_view lines(note);
  lines.remove_prefix(split + 2);
  if (lines.empty()) fail("checkpoint", "note has no signatures");
  if (lines.back() != '\n') fail("checkpoint", "note's last signature line does not end with a newline");

  const std::string hint = note_key_hint(key);
  bool named = false;
  while (!lines.empty()) {
    std::string_view line = lines.substr(0, lines.find('\n'));
    lines.remove_prefix(line.size() + 1);
    if (line.substr(0, kNoteSignaturePrefix.size()) != kNoteSignaturePrefix) {
      fail("checkpoint", "note signature line does not start with an em dash and a space");
    }
    line.remove_prefix(kNoteSignaturePrefix.size());
    const size_t space = line.find(' ');
    if (space == 0 || space == std::string_view::npos) fail("checkpoint", "note signature line has no key name");
    if (line.substr(0, space) != key_name) continue;
    named = true;
    std::string blob;
    try {
      blob = base64_decode(line.substr(space + 1));
    } catch (const Error& e) {
      fail("checkpoint", "signature by " + key_name + " is not valid base64: " + e.what());
    }
    if (blob.size() <= kNoteKeyHintBytes) fail("checkpoint", "signature by " + key_name + " is too short");
    if (blob.compare(0, kNoteKeyHintBytes, hint) != 0) continue;
    if (!key.verify(body, std::string_view(blob).substr(kNoteKeyHintBytes))) {
      fail("checkpoint", "signature by " + key_name + " does not verify: the note was altered");
    }
    return body;
  }
  fail("checkpoint", named ? "note is signed by a key named " + key_name + ", but not by the expected key"
                           : "note is not signed by " + key_name);
}

}  // namespace bulwark::registry
