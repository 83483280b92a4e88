"""The parts of a test manifest that every test writes the same way, written once.

Tests that need a whole manifest on disk (real certificates from `generate_pki` in
`../pki`, the demo export copied to `../exports/kommune-2023.xml`) vary the
environment, the HER-ids, the endpoint and a few extra keys; the municipality, EPJ,
service units, source and the certificate files are the same everywhere. Each test
still writes its own varying lines itself, so a line number it asserts stays visible
in its own file: `submission_head` is 15 lines (`apiVersion:` to `source:`).
"""

from __future__ import annotations


def submission_head(*, environment: str, her_id: int, service_her_id: int) -> str:
    """From `apiVersion:` to the `source:` line, for municipality 9999 and the demo units."""
    return f"""apiVersion: iplosctl/v1
kind: Submission
metadata: {{name: kommune-2023}}
spec:
  reportingYear: 2023
  environment: {environment}
  municipality: {{number: "9999", name: Demo kommune, orgNumber: "310000019"}}
  sender: {{herId: {her_id}, serviceHerId: {service_her_id}}}
  epj: {{system: DemoEPJ, version: 4.2.0}}
  epjMinimumVersions: {{DemoEPJ: 4.0.0}}
  serviceUnits:
    - {{orgNumber: "310000027", name: Demo hjemmetjeneste}}
    - {{orgNumber: "310000035", name: Demo sykehjem}}
    - {{orgNumber: "310000043", name: Demo bofellesskap}}
  source: {{plugin: xml, path: ../exports/kommune-2023.xml}}
"""


#: `spec.certificates` for the files `generate_pki` writes to `../pki`
CERTIFICATES = """  certificates:
    signing: {certificate: ../pki/municipality-signing.pem, key: ../pki/municipality-signing.key}
    encryption:
      certificate: ../pki/municipality-encryption.pem
      key: ../pki/municipality-encryption.key
    register:
      signing: ../pki/register-signing.pem
      encryption: ../pki/register-encryption.pem
      trustAnchors: ../pki/ca.pem
"""
