"""Test certificates (the `cryptography` package): a CA, a server certificate for 127.0.0.1
and localhost, client certificates (one the CA signed, one another CA signed, one expired),
written as PEM files, a PEM keystore (key + chain in one file, Kafka's `ssl.keystore.type=PEM`)
and PKCS12 stores.

    certs = make_certs(tmpdir)
    certs.server_pem, certs.ca_pem, certs.server_p12 (password certs.password), ...
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

PASSWORD = "test-secret"


@dataclass
class Certs:
    dir: str
    ca_pem: str  # the CA certificate (a truststore)
    ca_p12: str  # the same as a PKCS12 truststore
    server_pem: str  # key + chain, one file
    server_p12: str
    server_key: str  # the server's key alone (for inline PEM)
    server_chain: str  # the server's certificate alone
    client_cert: str  # CN=alice,OU=test,O=strom, signed by the CA
    client_key: str
    rogue_cert: str  # CN=mallory, signed by another CA
    rogue_key: str
    expired_cert: str  # CN=alice, signed by the CA, expired yesterday
    expired_key: str
    other_ca_pem: str
    ops_cert: str  # CN=bob,OU=ops,O=strom, signed by the CA (another OU than the others)
    ops_key: str
    renewed_server_pem: str  # a second server keystore: same names, new key and certificate
    renewed_server_chain: str
    password: str = PASSWORD


def _name(cn, ou=None, o="strom"):
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _cert(subject, key, issuer, issuer_key, *, ca=False, san=None, days=(-1, 365)):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                   x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def _pem_cert(c):
    return c.public_bytes(serialization.Encoding.PEM)


def make_certs(d, ips=()):
    """`ips`: more addresses the server certificate is valid for (nodes in namespaces)."""
    os.makedirs(d, exist_ok=True)

    def write(name, data):
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    ca_key, other_ca_key = _key(), _key()
    ca = _cert(_name("Strom Test CA"), ca_key, _name("Strom Test CA"), ca_key, ca=True, days=(-1, 3650))
    other_ca = _cert(_name("Other CA"), other_ca_key, _name("Other CA"), other_ca_key, ca=True)
    server_key = _key()
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
           *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]
    server = _cert(_name("broker", "test"), server_key, ca.subject, ca_key, san=san)
    client_key, rogue_key, expired_key = _key(), _key(), _key()
    client = _cert(_name("alice", "test"), client_key, ca.subject, ca_key)
    rogue = _cert(_name("mallory", "test"), rogue_key, other_ca.subject, other_ca_key)
    expired = _cert(_name("alice", "test"), expired_key, ca.subject, ca_key, days=(-30, -1))
    ops_key, renewed_key = _key(), _key()
    ops = _cert(_name("bob", "ops"), ops_key, ca.subject, ca_key)
    renewed = _cert(_name("broker", "test"), renewed_key, ca.subject, ca_key, san=san)
    enc = serialization.BestAvailableEncryption(PASSWORD.encode())
    return Certs(
        dir=d,
        ca_pem=write("ca.pem", _pem_cert(ca)),
        ca_p12=write("ca.p12", pkcs12.serialize_key_and_certificates(None, None, None, [ca], enc)),
        server_pem=write("server.pem", _pem_key(server_key) + _pem_cert(server) + _pem_cert(ca)),
        server_p12=write("server.p12", pkcs12.serialize_key_and_certificates(b"broker", server_key, server, [ca], enc)),
        server_key=write("server.key", _pem_key(server_key)),
        server_chain=write("server.crt", _pem_cert(server)),
        client_cert=write("client.crt", _pem_cert(client)),
        client_key=write("client.key", _pem_key(client_key)),
        rogue_cert=write("rogue.crt", _pem_cert(rogue)),
        rogue_key=write("rogue.key", _pem_key(rogue_key)),
        expired_cert=write("expired.crt", _pem_cert(expired)),
        expired_key=write("expired.key", _pem_key(expired_key)),
        other_ca_pem=write("other-ca.pem", _pem_cert(other_ca)),
        ops_cert=write("ops.crt", _pem_cert(ops)),
        ops_key=write("ops.key", _pem_key(ops_key)),
        renewed_server_pem=write("renewed-server.pem", _pem_key(renewed_key) + _pem_cert(renewed) + _pem_cert(ca)),
        renewed_server_chain=write("renewed-server.crt", _pem_cert(renewed)),
    )


# The secured cluster's internal listeners (tests/cluster): brokers reach each other on
# INTERNAL (SASL_SSL, PLAIN user `broker`) and the quorum on CONTROLLER: SSL with mutual TLS
# (the nodes' certificate CN=broker,OU=test,O=strom mapped to User:broker by a rule), or
# SASL_SSL with the nodes logging in as the PLAIN user `broker`.
INTERNAL_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" '
                 'password="broker-secret" user_broker="broker-secret" user_admin="admin-secret";')


def secured_internal_listeners(certs, controller="SSL"):
    """Cluster-wide settings; each node also needs `listeners_with_internal`. `controller`:
    the controller listener's protocol, SSL (mutual TLS) or SASL_SSL (PLAIN)."""
    if controller == "SSL":
        quorum = ["listener.name.controller.ssl.client.auth=required",
                  "listener.name.controller.ssl.principal.mapping.rules=RULE:^CN=([^,]*),OU=test,O=strom$/$1/"]
    else:
        quorum = ["listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                  "sasl.mechanism.controller.protocol=PLAIN",
                  f"listener.name.controller.plain.sasl.jaas.config={INTERNAL_JAAS}"]
    return [
        f"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:SASL_SSL,CONTROLLER:{controller}",
        *quorum,
        "inter.broker.listener.name=INTERNAL",
        "sasl.enabled.mechanisms=PLAIN", "sasl.mechanism.inter.broker.protocol=PLAIN",
        f"listener.name.internal.plain.sasl.jaas.config={INTERNAL_JAAS}",
        "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}",
        "ssl.truststore.type=PEM", f"ssl.truststore.location={certs.ca_pem}",
    ]


def listeners_with_internal(node, internal_port):
    """A cluster node's listeners: PLAINTEXT for clients, INTERNAL, CONTROLLER."""
    h = node.host
    return [f"listeners=PLAINTEXT://{h}:{node.kafka_port},INTERNAL://{h}:{internal_port},"
            f"CONTROLLER://{h}:{node.controller_port}"]
