"""``khaosync init``: a commented ``khaosync.yaml`` for a live site, every key documented.

The file states every key the configuration takes (a test walks ``khaosync.config.Profile``
and fails when one is missing here), with its default and what it does. The site's two URLs
are placeholders to replace; secrets are read from environment variables, never written.
"""

from __future__ import annotations

TEMPLATE = """\
# khaosync.yaml: one merchant's live installation. Written by `khaosync init`; every key is
# shown with its default. Check it with: khaosync doctor
#
# Plain http:// is refused except to localhost and literal loopback addresses.
# Secrets come from environment variables (api_key_env, password_env) and are never printed.

mode: live                      # required: live (real systems) or sandbox (the built-in emulators)
name: my-site                   # a name for this profile, shown in runs and reports

khaos:                          # Khaos Control's SOAP web service (docs/khaos-soap.md)
  # The site's endpoint: replace host and path with your KC web service's.
  soap_url: https://kc.example.com/LiveSoap/KhaosKSD.exe/soap/IKosWeb
  wsdl_url: null                # null: soap_url with /soap/ replaced by /wsdl/
  verify_tls: true              # false only for a site's self-signed test server
  timeout_s: 60.0               # seconds per request
  retries: 4                    # retries after a failed request (0-10)
  credentials: null             # most sites need none; if yours does:
  #   username: sync
  #   password_env: KHAOS_PASSWORD   # the environment variable holding the password
  #   password: null                 # or the password itself (prefer password_env)
  #   mode: body                     # body: UserName/Password in each call | session: Login once, SessionID header
  methods: {}                   # our method name -> the site's, when a site renamed one
                                # (khaosync khaos discover lists them), e.g. {GetCompanyList: GetCompanyListEx}
  company_batch: 200            # companies per ExportCompany request (1-1000)
  stock_batch: 50               # stock codes per ExportStock request (1-500)
  compressed_stock: true        # ExportStockCompressed (base64 zip); false: ExportStock
  stock_list_form: last_updated # GetStockList(LastUpdated) | date_type: (DateType, DateValue, StockItemType)
  body_namespace: null          # null: read from the site's WSDL (Delphi: urn:IKosWebIntf-IKosWeb)
  credit_notes_path: null       # folder of KC credit note report exports (the web service has none)

ometria:                        # Ometria's Data API (docs/push.md)
  base_url: https://api.ometria.com/v2   # the Data API; a loopback http:// URL for sandbox serve
  api_key_env: OMETRIA_API_KEY  # the environment variable holding the API key
  api_key: null                 # or the key itself (prefer api_key_env; never printed)
  collection: khaos             # the contact collection khaosync writes
  store: null                   # Ometria store id for orders and products, if the account has several
  push_rate: 4.0                # push requests/s (older docs say 4, current ones 8)
  read_rate: 4.0                # read requests/s (diff --live, reconcile --live, verification)
  read_in_flight: 4             # read-back GETs kept in flight during verification, all within read_rate
  timeout_s: 30.0               # seconds per request
  retries: 5                    # retries after 429/5xx/timeouts (0-20)
  push_in_flight: 8             # push requests kept in flight (1-64)
  verify_delay_s: 0.0           # wait before reading back: Ometria stores records asynchronously
  verify_sample: 20             # records read back per type after a push (--verify sample)
  unsubscribes_full_answer: 500 # an unsubscribes answer this long may be cut short: its window is split
  unsubscribes_max_requests: 500  # the most requests one read of unsubscribes makes

mappings:                       # mapping files, combined in order (docs/mappings.md)
  - mappings/default.yaml

state: .khaosync/state.db       # the state store (one per merchant; one writer at a time)

pull:                           # how far back pull reads (docs/pull.md)
  lookback_hours: 24            # re-read this much before each bookmark
  history_start: 2015-01-01     # where `pull --full` starts
  first_order_code: SO00001     # the sales order code a first (or --full) pull walks from
  order_code_gap: 50            # unknown order codes in a row that end the walk (deleted codes leave gaps)
  order_status_lookback_days: 60  # completed orders placed this recently are asked their status again
  reexport_open_orders: false   # true: export those orders again too (edits that leave totals alone)
  stock_status: all             # stock levels each run: all staged items | changed | off

plans:                          # the plans diff makes (docs/diff.md)
  retention_days: 30            # superseded and pushed plans older than this lose their bodies (the row stays)

sandbox:                        # only used by a sandbox profile
  path: .khaosync/sandbox       # where `khaosync sandbox init` plants the emulated merchant
"""


def template() -> str:
    return TEMPLATE
