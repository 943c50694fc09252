"""Tests of PII detection and redaction: each kind found and replaced, code left intact."""

import pytest

from lmforge.data.pii import PII_KINDS, find_pii, redact_pii, shannon_entropy

GITHUB_TOKEN = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
SLACK_TOKEN = "xoxb-1234567890-abcdefABCDEF"
AWS_KEY = "AKIAIOSFODNN7QWERTYU"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7q9ZxVbN3Fj2kLp8Qw4Rt6Ys1Ud5Ie7Of9Pg0Ah3Bj6Ck8Dl2Em4Fn\n"
       "q9ZxTz0/+Ab==\n-----END RSA PRIVATE KEY-----")


def counts(**kinds: int) -> dict[str, int]:
    return {kind: kinds.get(kind, 0) for kind in PII_KINDS}


@pytest.mark.parametrize("text, kind, placeholder", [
    ("# Author: Jane Doe <jane.doe+lists@mail.python.org>\n", "email", "<EMAIL>"),
    ("contact: bob_smith@uni-heidelberg.de.\n", "email", "<EMAIL>"),
    ("server = '93.184.216.34'\n", "ipv4", "<IP_ADDRESS>"),
    ("dns = \"2001:4860:4860::8888\"\n", "ipv6", "<IP_ADDRESS>"),
    (f"aws_access_key_id = {AWS_KEY}\n", "secret", "<SECRET>"),
    (f"token = '{GITHUB_TOKEN}'\n", "secret", "<SECRET>"),
    ("gl = 'glpat-Ab3De5Fg7Hj9Kl1Mn3Pq'\n", "secret", "<SECRET>"),
    (f"SLACK = '{SLACK_TOKEN}'\n", "secret", "<SECRET>"),
    (f"key = '''{PEM}'''\n", "secret", "<SECRET>"),
    ("API_KEY = \"Zx9kLm2Qp7Rt5Vw3Yb8Nc4Df\"\n", "secret", "<SECRET>"),
    ("maps(key=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW)\n", "secret", "<SECRET>"),
    ("stripe.api_key = sk_live_4eC39HqLyjWDarjtT1zdp7dc\n", "secret", "<SECRET>"),
    ("config['db_password'] = 'h7Gk2PqX9mZr4TvW8yLs'\n", "secret", "<SECRET>"),
])
def test_each_kind_is_found_and_redacted(text, kind, placeholder):
    assert find_pii(text) == counts(**{kind: 1})
    redacted, found = redact_pii(text)
    assert found == counts(**{kind: 1})
    assert placeholder in redacted
    assert find_pii(redacted) == counts()


def test_assignment_keeps_the_name_and_quotes():
    redacted, _ = redact_pii("api_key = \"Zx9kLm2Qp7Rt5Vw3Yb8Nc4Df\"\n")
    assert redacted == "api_key = \"<SECRET>\"\n"


def test_counts_are_exact_in_a_mixed_document():
    text = (
        "# Maintainers: a.b@corp.com, c@corp.com, docs@example.com\n"
        "HOSTS = ['93.184.216.34', '8.8.4.40', '127.0.0.1', '10.0.0.1', '2606:4700::1111']\n"
        f"TOKEN = '{GITHUB_TOKEN}'  # and {AWS_KEY}\n"
    )
    assert find_pii(text) == counts(email=2, ipv4=2, ipv6=1, secret=2)
    redacted, found = redact_pii(text)
    assert found == counts(email=2, ipv4=2, ipv6=1, secret=2)
    assert find_pii(redacted) == counts()
    assert redacted.count("<EMAIL>") == 2 and redacted.count("<IP_ADDRESS>") == 3
    assert "docs@example.com" in redacted and "'127.0.0.1'" in redacted and "'10.0.0.1'" in redacted


@pytest.mark.parametrize("text", [
    "__version__ = '1.2.3.4'\n",  # single-digit dotted numbers read as versions
    "release = 'version 10.20.30.40'\n",  # named as a version
    "v = '1.10.20.30.40'\n",  # more than four parts
    "ptr = '34.216.184.93.in-addr.arpa'\n",  # a reverse-DNS name, not an address
    "ANY = '0.0.0.0'\nLOCAL = '127.0.0.1'\nLAN = ['192.168.1.20', '10.1.2.3', '172.16.0.9']\n",  # kept, as BigCode does
    "@dataclass\nclass A:\n    @property\n    def f(self):\n        return self.w @ self.x\n",  # decorators, matmul
    "y = a@b.T + x@self.weight\n",  # matmul with attribute access, no email TLD
    "mail = 'someone@example.com'  # or user@mail.example.org, root@localhost\n",  # documentation domains
    "x = arr[::2] + arr[1::3]\nif a::\n    pass\nt = '12:30:45'\nmac = '00:1a:2b:3c:4d:5e'\n",  # slices, times, MAC
    "LOOP6 = '::1'\nLINK = 'fe80::1'\nDOC = '2001:db8::1'\n",  # loopback, link-local, documentation IPv6
    "api_key = 'your-api-key-goes-here-please'\npassword = 'aaaaaaaaaaaaaaaaaaaaaaaa'\n",  # placeholders, low entropy
    "path = '/usr/local/lib/python3.11/site-packages'\nsecret_name = 'some_module.some_function'\n",
    "digest = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'\n",  # hash, not assigned to a key
    "TOKEN_USAGE = 'mlflow.trace.tokenUsage'\nauth_token_class = 'PocketAudioTokenizerModel'\n",  # names
    "secret_ref = '{{secrets/my_scope/my_key2}}'\napi_token = 'cache_creation_input_tokens_1hr'\n",
    "MARKERS = ('-----BEGIN RSA PRIVATE KEY-----', '-----END RSA PRIVATE KEY-----')\n",  # markers, no key
    "ED25519 = ObjectIdentifier('1.3.101.112')\nsee section 13.7.1.4 and pkg>=3.46.0.12\n",  # OIDs, sections, pins
])
def test_code_false_positives_are_left_alone(text):
    assert find_pii(text) == counts()
    redacted, found = redact_pii(text)
    assert redacted is text and found == counts()


def test_token_glued_to_a_word_is_not_a_token():
    assert find_pii(f"x{AWS_KEY}") == counts()
    assert find_pii(AWS_KEY) == counts(secret=1)


def test_redaction_is_idempotent_and_handles_edges():
    text = f"{AWS_KEY}\njoe@python.org"
    redacted, found = redact_pii(text)
    assert redacted == "<SECRET>\n<EMAIL>" and found == counts(email=1, secret=1)
    assert redact_pii(redacted) == (redacted, counts())
    assert find_pii("") == counts() and find_pii("@x.com") == counts()


def test_shannon_entropy():
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


# --- Chinese and Japanese phone numbers, Chinese resident ID numbers ----------------------------

# GB 11643-1999's own example (a Beijing ID: region 110105, born 1949-12-31, check character X).
CN_ID = "11010519491231002X"


def test_cn_id_check_character_is_iso_7064_mod_11_2():
    from lmforge.data.pii import id_check_character, is_cn_resident_id

    assert id_check_character(CN_ID[:17]) == "X"
    assert is_cn_resident_id(CN_ID) and is_cn_resident_id(CN_ID.lower())
    assert not is_cn_resident_id(CN_ID[:17] + "0")  # wrong check character
    assert not is_cn_resident_id("110105" + "19490231" + "0021")  # 31 February


@pytest.mark.parametrize("text, found", [
    ("联系电话：13812345678。\n", "13812345678"),
    ("手机 +86 138 1234 5678 欢迎来电\n", "+86 138 1234 5678"),
    ("客服 0086-13912345678\n", "0086-13912345678"),
    ("办公室电话 010-62345678，传真 0755-2345678\n", "010-62345678"),
    ("+86 10 62345678\n", "+86 10 62345678"),
    ("お問い合わせは 090-1234-5678 まで。\n", "090-1234-5678"),
    ("携帯 080-2345-6789\n", "080-2345-6789"),
    ("+81 (0)90-1234-5678\n", "+81 (0)90-1234-5678"),
    ("代表 03-1234-5678（平日）\n", "03-1234-5678"),
    ("海外から +81 90-1234-5678\n", "+81 90-1234-5678"),
    ("Tel. +81-3-1234-5678.\n", "+81-3-1234-5678"),
    (f"身份证号：{CN_ID}\n", CN_ID),
])
def test_cjk_phones_and_ids_are_found_and_redacted(text, found):
    from lmforge.data.pii import find_pii_spans

    spans = find_pii_spans(text)
    assert [text[a:b] for a, b, _ in spans][0] == found
    kind = "id_number" if found == CN_ID else "phone"
    redacted, n = redact_pii(text)
    assert n[kind] >= 1 and f"<{'ID_NUMBER' if kind == 'id_number' else 'PHONE'}>" in redacted
    assert found not in redacted and find_pii(redacted) == counts()


@pytest.mark.parametrize("text", [
    "x = 13812345678901  # 14 digits: a counter, not a phone\n",
    "SIZE = 4294967296\n",
    "addr = 0x13812345678\n",
    "version 1.13812345678\n",
    "ts = 1669852800123\n",  # 13-digit millisecond timestamp
    "build 2020-1234-5678\n",  # does not start with 0: a date-like id
    "id = 110105194912310021\n",  # 18 digits with a wrong check character
    "big = 123456789012345678\n",
    "a_13812345678 = 1\n",
    "\t\t\t// * 17179869184\n",  # 2**34, a bare 11-digit number without phone context (Go's decimal.go)
    "{Unix(-19012425939, 649), UTC}\n",
    " 0  Stored        0   0% 08-05-2021 18:31\n",  # a date (Go's archive/zip reader_test.go)
    "010: 0000 0001 0000 0001 0803 0000 0028 cb34\n",  # a hex dump
])
def test_numbers_in_code_are_not_phones_or_ids(text):
    assert redact_pii(text)[0] == text
