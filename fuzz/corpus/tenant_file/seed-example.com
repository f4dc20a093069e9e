# A tenant starting out: senders report failures (TLS-RPT) but still deliver.
domain: example.com
mode: testing
mx:
  - mail.example.com
max_age: 86400
tlsrpt:
  rua:
    - mailto:tlsrpt@example.com
