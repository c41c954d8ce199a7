// Model signatures (OMS v1.0 bundles) and signed notes: keys, tamper detection, key rotation and
// interoperability with the openssl command-line tool.
#include "registry/signing.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/digest.h"
#include "registry_test_util.h"

namespace bulwark::registry {
namespace {

using nlohmann::json;

// A fresh directory under the system temp dir, removed when the object goes.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bulwark-signing-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// Runs `f`, which must throw SignatureError; returns its check and message.
template <typename F>
std::pair<std::string, std::string> signature_failure(F f) {
  try {
    f();
  } catch (const SignatureError& e) {
    return {e.check, e.what()};
  }
  ADD_FAILURE() << "expected a SignatureError";
  return {};
}

using test::error_of;  // registry_test_util.h
using test::file_mode;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A signing key written to `dir` as <name>.key / <name>.pub.
SigningKey make_key(const TempDir& dir, const std::string& name) {
  generate_key_pair(dir.file(name + ".key"), dir.file(name + ".pub"));
  return SigningKey::load(dir.file(name + ".key"));
}

const std::vector<FileDigest> kFiles = {{"weights.pt", sha256_hex("weights")}, {"config.json", sha256_hex("config")}};

// A bundle signing an arbitrary statement text, to test checks that come after the signature.
std::string bundle_for(const SigningKey& key, const std::string& statement) {
  const std::string payload_type = "application/vnd.in-toto+json";
  json bundle = json::parse(sign_bundle(key, "m", kFiles));
  bundle["dsseEnvelope"]["payload"] = base64_encode(statement);
  bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64_encode(key.sign(dsse_pae(payload_type, statement)));
  return bundle.dump();
}

std::string payload_of(const std::string& bundle) {
  return base64_decode(json::parse(bundle)["dsseEnvelope"]["payload"].get<std::string>());
}

TEST(Signing, Base64MatchesRfc4648AndRejectsInvalidText) {
  const std::vector<std::pair<std::string, std::string>> vectors = {{"", ""},
                                                                    {"f", "Zg=="},
                                                                    {"fo", "Zm8="},
                                                                    {"foo", "Zm9v"},
                                                                    {"foob", "Zm9vYg=="},
                                                                    {"fooba", "Zm9vYmE="},
                                                                    {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    EXPECT_EQ(base64_decode(encoded), plain);
  }
  const std::string bytes("\x00\xff\xfe\x80?>", 6);
  EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes);
  for (const char* bad : {"Zg=", "Zg", "Z===", "Zm9v\n", "Zm=v", "Zh==", "Zm$v"}) {
    EXPECT_EQ(error_of([&] { base64_decode(bad); }).kind(), ErrorKind::kDataFormat) << bad;
  }
}

TEST(Signing, GeneratedKeysHaveSafeModesAndAreNeverOverwritten) {
  TempDir dir;
  const std::string priv = dir.file("k.key"), pub = dir.file("k.pub");
  generate_key_pair(priv, pub);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(file_mode(priv), 0600u);
  EXPECT_EQ(file_mode(pub), 0644u & ~mask);

  const SigningKey key = SigningKey::load(priv);
  std::ifstream in(pub);
  const std::string pub_text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(pub_text, key.public_pem());
  EXPECT_EQ(pub_text.rfind("-----BEGIN PUBLIC KEY-----\n", 0), 0u);
  EXPECT_EQ(key.key_id(), sha256_hex(pub_text));

  const Error again = error_of([&] { generate_key_pair(priv, pub); });
  EXPECT_EQ(again.kind(), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(again.what(), priv)) << again.what();
  EXPECT_EQ(SigningKey::load(priv).key_id(), key.key_id()) << "the existing key was replaced";

  // A clash on the public path must not leave a new private key behind.
  const Error clash = error_of([&] { generate_key_pair(dir.file("new.key"), pub); });
  EXPECT_TRUE(contains(clash.what(), pub)) << clash.what();
  EXPECT_FALSE(std::filesystem::exists(dir.file("new.key")));
}

TEST(Signing, LoadRefusesLoosePermissionsMalformedKeysAndMissingFiles) {
  TempDir dir;
  generate_key_pair(dir.file("k.key"), dir.file("k.pub"));
  ASSERT_EQ(::chmod(dir.file("k.key").c_str(), 0644), 0);
  const Error loose = error_of([&] { SigningKey::load(dir.file("k.key")); });
  EXPECT_TRUE(contains(loose.what(), dir.file("k.key")) && contains(loose.what(), "0644") &&
              contains(loose.what(), "too open"))
      << loose.what();

  write_text(dir.file("junk.key"), "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n");
  ASSERT_EQ(::chmod(dir.file("junk.key").c_str(), 0600), 0);
  const Error junk = error_of([&] { SigningKey::load(dir.file("junk.key")); });
  EXPECT_EQ(junk.kind(), ErrorKind::kDataFormat);
  EXPECT_TRUE(contains(junk.what(), dir.file("junk.key"))) << junk.what();

  const std::string p384 = dir.file("p384.key");
  ASSERT_EQ(std::system(("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out " + p384 +
                         " 2>/dev/null && chmod 600 " + p384)
                            .c_str()),
            0);
  const Error curve = error_of([&] { SigningKey::load(p384); });
  EXPECT_TRUE(contains(curve.what(), "P-256") && contains(curve.what(), p384)) << curve.what();

  const Error missing = error_of([&] { SigningKey::load(dir.file("absent.key")); });
  EXPECT_EQ(missing.kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(contains(missing.what(), dir.file("absent.key"))) << missing.what();
}

TEST(Signing, TrustListLoadsPubFilesAndNamesBadOnes) {
  TempDir dir;
  const SigningKey a = make_key(dir, "a"), b = make_key(dir, "b");
  write_text(dir.file("notes.txt"), "not a key");
  const TrustList trust = TrustList::load_dir(dir.path());
  EXPECT_EQ(trust.size(), 2u);
  ASSERT_NE(trust.find(a.key_id()), nullptr);
  EXPECT_EQ(trust.find(a.key_id())->pem(), a.public_pem());
  EXPECT_NE(trust.find(b.key_id()), nullptr);
  EXPECT_EQ(trust.find(sha256_hex("nobody")), nullptr);

  write_text(dir.file("broken.pub"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
  const Error broken = error_of([&] { TrustList::load_dir(dir.path()); });
  EXPECT_EQ(broken.kind(), ErrorKind::kDataFormat);
  EXPECT_TRUE(contains(broken.what(), dir.file("broken.pub"))) << broken.what();

  const Error missing = error_of([&] { TrustList::load_dir(dir.file("none")); });
  EXPECT_EQ(missing.kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(contains(missing.what(), dir.file("none"))) << missing.what();
}

TEST(Signing, DssePaeIsTheSpecEncoding) {
  EXPECT_EQ(dsse_pae("http://example.com/HelloWorld", "hello world"),
            "DSSEv1 29 http://example.com/HelloWorld 11 hello world");
  EXPECT_EQ(dsse_pae("", ""), "DSSEv1 0  0 ");
}

TEST(Signing, StatementRootDigestIsSha256OfSortedRawDigests) {
  const json statement = json::parse(make_statement("my-model", kFiles));
  EXPECT_EQ(statement["_type"], "https://in-toto.io/Statement/v1");
  EXPECT_EQ(statement["predicateType"], "https://model_signing/signature/v1.0");
  EXPECT_EQ(statement["predicate"]["serialization"]["method"], "files");
  const json& resources = statement["predicate"]["resources"];
  ASSERT_EQ(resources.size(), 2u);
  EXPECT_EQ(resources[0]["name"], "config.json");  // sorted by name
  EXPECT_EQ(resources[1]["name"], "weights.pt");
  EXPECT_EQ(resources[0]["algorithm"], "sha256");

  // Raw digests computed independently of the code under test.
  std::string raw;
  for (const char* content : {"config", "weights"}) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    ASSERT_EQ(EVP_Digest(content, std::strlen(content), md, &n, EVP_sha256(), nullptr), 1);
    raw.append(reinterpret_cast<const char*>(md), n);
  }
  EXPECT_EQ(statement["subject"][0]["name"], "my-model");
  EXPECT_EQ(statement["subject"][0]["digest"]["sha256"], sha256_hex(raw));

  for (const auto& bad : std::vector<std::vector<FileDigest>>{{},
                                                              {{"", sha256_hex("x")}},
                                                              {{"../x", sha256_hex("x")}},
                                                              {{"a", "ABC"}},
                                                              {{"a", sha256_hex("x")}, {"a", sha256_hex("y")}}}) {
    EXPECT_EQ(error_of([&] { make_statement("m", bad); }).kind(), ErrorKind::kInvalidArgument);
  }
}

TEST(Signing, SignedBundleVerifiesAndMatchesTheFiles) {
  TempDir dir;
  const SigningKey key = make_key(dir, "k");
  write_text(dir.file("w.pt"), "weights");
  write_text(dir.file("c.json"), "config");
  const std::string bundle = sign_bundle(key, "my-model", kFiles);
  EXPECT_EQ(json::parse(bundle)["verificationMaterial"]["publicKey"]["hint"], key.key_id());

  TrustList trust;
  trust.add(key.public_key());
  const VerifiedBundle v = verify_bundle(bundle, trust);
  EXPECT_EQ(v.key_id, key.key_id());
  EXPECT_EQ(v.model_name, "my-model");
  ASSERT_EQ(v.files.size(), 2u);
  EXPECT_EQ(v.files[0].name, "config.json");
  EXPECT_EQ(v.files[1].sha256_hex, sha256_hex("weights"));
  verify_files(v, {{"weights.pt", dir.file("w.pt")}, {"config.json", dir.file("c.json")}});
}

TEST(Signing, TamperingIsCaughtByTheRightCheck) {
  TempDir dir;
  const SigningKey key = make_key(dir, "k");
  TrustList trust;
  trust.add(key.public_key());
  const std::string bundle = sign_bundle(key, "m", kFiles);

  json flipped_payload = json::parse(bundle);
  std::string payload = payload_of(bundle);
  payload[payload.find("weights.pt")] = 'W';
  flipped_payload["dsseEnvelope"]["payload"] = base64_encode(payload);
  EXPECT_EQ(signature_failure([&] { verify_bundle(flipped_payload.dump(), trust); }).first, "signature");

  json flipped_sig = json::parse(bundle);
  std::string sig = base64_decode(flipped_sig["dsseEnvelope"]["signatures"][0]["sig"].get<std::string>());
  sig[sig.size() - 1] ^= 0x01;
  flipped_sig["dsseEnvelope"]["signatures"][0]["sig"] = base64_encode(sig);
  EXPECT_EQ(signature_failure([&] { verify_bundle(flipped_sig.dump(), trust); }).first, "signature");

  const SigningKey stranger = make_key(dir, "stranger");
  const auto untrusted = signature_failure([&] { verify_bundle(sign_bundle(stranger, "m", kFiles), trust); });
  EXPECT_EQ(untrusted.first, "untrusted-key");
  EXPECT_TRUE(contains(untrusted.second, stranger.key_id())) << untrusted.second;

  // A correctly signed statement whose subject digest does not match its resources.
  json statement = json::parse(payload_of(bundle));
  statement["subject"][0]["digest"]["sha256"] = sha256_hex("something else");
  EXPECT_EQ(signature_failure([&] { verify_bundle(bundle_for(key, statement.dump()), trust); }).first, "statement");
  statement = json::parse(payload_of(bundle));
  statement["predicateType"] = "https://example.com/other";
  EXPECT_EQ(signature_failure([&] { verify_bundle(bundle_for(key, statement.dump()), trust); }).first, "statement");
}

TEST(Signing, MalformedBundlesFailTheBundleCheckWithoutEchoingIt) {
  TempDir dir;
  const SigningKey key = make_key(dir, "k");
  TrustList trust;
  trust.add(key.public_key());
  const std::string bundle = sign_bundle(key, "m", kFiles);

  EXPECT_EQ(signature_failure([&] { verify_bundle("{not json", trust); }).first, "bundle");
  json two_sigs = json::parse(bundle);
  two_sigs["dsseEnvelope"]["signatures"].push_back(two_sigs["dsseEnvelope"]["signatures"][0]);
  EXPECT_EQ(signature_failure([&] { verify_bundle(two_sigs.dump(), trust); }).first, "bundle");
  json no_hint = json::parse(bundle);
  no_hint["verificationMaterial"]["publicKey"].erase("hint");
  const auto missing = signature_failure([&] { verify_bundle(no_hint.dump(), trust); });
  EXPECT_EQ(missing.first, "bundle");
  EXPECT_TRUE(contains(missing.second, "verificationMaterial.publicKey.hint")) << missing.second;
  json bad_base64 = json::parse(bundle);
  bad_base64["dsseEnvelope"]["payload"] = "%%%%";
  EXPECT_EQ(signature_failure([&] { verify_bundle(bad_base64.dump(), trust); }).first, "bundle");
  json media = json::parse(bundle);
  media["mediaType"] = std::string(10000, 'x');
  const auto wrong_media = signature_failure([&] { verify_bundle(media.dump(), trust); });
  EXPECT_EQ(wrong_media.first, "bundle");
  EXPECT_LT(wrong_media.second.size(), 300u) << "the message should not echo untrusted input at length";
}

TEST(Signing, VerifyFilesCatchesChangedMissingAndExtraFiles) {
  TempDir dir;
  const SigningKey key = make_key(dir, "k");
  TrustList trust;
  trust.add(key.public_key());
  const VerifiedBundle v = verify_bundle(sign_bundle(key, "m", kFiles), trust);
  write_text(dir.file("w.pt"), "weights, poisoned");
  write_text(dir.file("c.json"), "config");

  const auto changed = signature_failure([&] {
    verify_files(v, {{"weights.pt", dir.file("w.pt")}, {"config.json", dir.file("c.json")}});
  });
  EXPECT_EQ(changed.first, "digest");
  EXPECT_TRUE(contains(changed.second, "weights.pt") && contains(changed.second, sha256_hex("weights").substr(0, 12)) &&
              contains(changed.second, sha256_hex("weights, poisoned").substr(0, 12)))
      << changed.second;

  const auto missing = signature_failure([&] { verify_files(v, {{"config.json", dir.file("c.json")}}); });
  EXPECT_EQ(missing.first, "files");
  EXPECT_TRUE(contains(missing.second, "weights.pt")) << missing.second;

  const auto extra = signature_failure([&] {
    verify_files(v,
                 {{"weights.pt", dir.file("w.pt")}, {"config.json", dir.file("c.json")}, {"x.py", dir.file("c.json")}});
  });
  EXPECT_EQ(extra.first, "files");
  EXPECT_TRUE(contains(extra.second, "x.py")) << extra.second;
}

TEST(Signing, KeyRotationKeepsOldBundlesValidUntilTheOldKeyIsRemoved) {
  TempDir keys, trusted;
  const SigningKey old_key = make_key(keys, "old"), new_key = make_key(keys, "new");
  std::filesystem::copy_file(keys.file("old.pub"), trusted.file("old.pub"));
  std::filesystem::copy_file(keys.file("new.pub"), trusted.file("new.pub"));
  const std::string old_bundle = sign_bundle(old_key, "m", kFiles);
  const std::string new_bundle = sign_bundle(new_key, "m", kFiles);

  const TrustList both = TrustList::load_dir(trusted.path());
  EXPECT_EQ(both.key_ids().size(), 2u);
  EXPECT_EQ(verify_bundle(old_bundle, both).key_id, old_key.key_id());
  EXPECT_EQ(verify_bundle(new_bundle, both).key_id, new_key.key_id());

  std::filesystem::remove(trusted.file("old.pub"));
  const TrustList rotated = TrustList::load_dir(trusted.path());
  EXPECT_EQ(rotated.key_ids(), std::vector<std::string>{new_key.key_id()});
  EXPECT_EQ(verify_bundle(new_bundle, rotated).key_id, new_key.key_id());
  EXPECT_EQ(signature_failure([&] { verify_bundle(old_bundle, rotated); }).first, "untrusted-key");
}

TEST(Signing, OpensslCommandLineVerifiesTheBundleSignature) {
  TempDir dir;
  const SigningKey key = make_key(dir, "k");
  const json bundle = json::parse(sign_bundle(key, "m", kFiles));
  const std::string payload = base64_decode(bundle["dsseEnvelope"]["payload"].get<std::string>());
  const std::string type = bundle["dsseEnvelope"]["payloadType"];
  write_text(dir.file("pae.bin"), dsse_pae(type, payload));
  write_text(dir.file("sig.der"), base64_decode(bundle["dsseEnvelope"]["signatures"][0]["sig"].get<std::string>()));
  const std::string verify = "openssl dgst -sha256 -verify " + dir.file("k.pub") + " -signature " +
                             dir.file("sig.der") + " " + dir.file("pae.bin") + " >/dev/null 2>&1";
  EXPECT_EQ(std::system(verify.c_str()), 0);

  write_text(dir.file("pae.bin"), dsse_pae(type, payload + " "));
  EXPECT_NE(std::system(verify.c_str()), 0) << "openssl accepted a changed payload";
}

TEST(Signing, SignedNotesRoundTripAndRejectTampering) {
  TempDir dir;
  const SigningKey key = make_key(dir, "k");
  const PublicKey pub = key.public_key();
  const std::string body = "bulwark.example/log\n42\nq0mJ1vBdT0UU/xzBZyPdLkBgmbrKTYtnUSVkuG1NvgE=\n";
  const std::string note = sign_note(body, "bulwark.example/log", key);
  EXPECT_EQ(open_note(note, "bulwark.example/log", pub), body);

  // Format: blank line, em dash, name, base64 of the 4-byte SPKI hint then the DER signature.
  const std::string prefix = body + "\n\xE2\x80\x94 bulwark.example/log ";
  ASSERT_EQ(note.rfind(prefix, 0), 0u) << note;
  const std::string blob = base64_decode(note.substr(prefix.size(), note.size() - prefix.size() - 1));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  const std::string der = pub.spki_der();
  ASSERT_EQ(EVP_Digest(der.data(), der.size(), md, &n, EVP_sha256(), nullptr), 1);
  EXPECT_EQ(blob.substr(0, 4), std::string(reinterpret_cast<const char*>(md), 4));
  EXPECT_TRUE(pub.verify(body, blob.substr(4)));

  std::string altered = note;
  altered[altered.find("42")] = '9';
  EXPECT_EQ(signature_failure([&] { open_note(altered, "bulwark.example/log", pub); }).first, "checkpoint");
  EXPECT_EQ(signature_failure([&] { open_note(note, "other.example/log", pub); }).first, "checkpoint");
  const PublicKey other = make_key(dir, "other").public_key();
  EXPECT_EQ(signature_failure([&] { open_note(note, "bulwark.example/log", other); }).first, "checkpoint");
  EXPECT_EQ(signature_failure([&] { open_note(body, "bulwark.example/log", pub); }).first, "checkpoint");

  EXPECT_EQ(error_of([&] { sign_note("no newline", "k", key); }).kind(), ErrorKind::kInvalidArgument);
  EXPECT_EQ(error_of([&] { sign_note("a\n\nb\n", "k", key); }).kind(), ErrorKind::kInvalidArgument);
  EXPECT_EQ(error_of([&] { sign_note(body, "bad name", key); }).kind(), ErrorKind::kInvalidArgument);
}

}  // namespace
}  // namespace bulwark::registry
