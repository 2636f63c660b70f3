"""Getting an sp-hub access token as a SMART backend-services client, with
PyJWT and requests: an independent implementation of the client side of
POST /auth/token (RS384 for the keys made here, ES384 for the demo
clients' keys; the Rust tests use ES384 too).

    sp_hub_auth.py keygen DIR CLIENT_ID
        writes DIR/CLIENT_ID.key.pem (private, RSA 2048) and
        DIR/CLIENT_ID.jwks.json (public, for `sp-hub client add --jwks`)
    sp_hub_auth.py token BASE_URL CLIENT_ID KEY_PEM SCOPE
        prints an access token
"""

import json
import sys
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def keygen(directory, client_id):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(f"{directory}/{client_id}.key.pem", "wb") as f:
        f.write(pem)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": f"{client_id}-key-1", "use": "sig", "alg": "RS384"})
    with open(f"{directory}/{client_id}.jwks.json", "w") as f:
        json.dump({"keys": [public]}, f)


def token(base, client_id, key_pem, scope):
    config = requests.get(f"{base}/.well-known/smart-configuration", timeout=30).json()
    endpoint = config["token_endpoint"]
    now = int(time.time())
    # RS384 for an RSA key (as keygen makes), ES384 for a P-384 key (as
    # `sp-hub serve --demo` makes).
    key = serialization.load_pem_private_key(key_pem, password=None)
    alg = "ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS384"
    assertion = jwt.encode(
        {"iss": client_id, "sub": client_id, "aud": endpoint,
         "exp": now + 240, "jti": str(uuid.uuid4())},
        key_pem,
        algorithm=alg,
        headers={"kid": f"{client_id}-key-1"},
    )
    r = requests.post(endpoint, data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
        "scope": scope,
    }, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


def main(argv):
    if len(argv) == 4 and argv[1] == "keygen":
        keygen(argv[2], argv[3])
        return 0
    if len(argv) == 6 and argv[1] == "token":
        with open(argv[4], "rb") as f:
            print(token(argv[2], argv[3], f.read(), argv[5]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
