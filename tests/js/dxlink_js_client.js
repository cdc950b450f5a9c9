// The official dxFeed JavaScript client (@dxfeed/dxlink-api) against a DXLink URL.
// Usage: node dxlink_js_client.js URL [TOKEN] [--quotes N] [--candle SYMBOL] [--from-time MS]
// Subscribes to Quote SPY and to Candle SYMBOL (default AAPL{=5m}) history from MS (default: an
// hour ago). Prints one JSON object, then exits 0, once it has N Quotes (default 1) and the whole
// Candle snapshot (through the candle flagged SNAPSHOT_END or SNAPSHOT_SNIP):
//   {"Quote": first Quote, "Candle": first Candle, "Quotes": [N Quotes], "Candles": [snapshot]}
// Exits 1 on an error or after 20 s without all of them.
globalThis.WebSocket = require('ws')
const { DXLinkWebSocketClient, DXLinkFeed, FeedDataFormat } = require('@dxfeed/dxlink-api')

const positional = []
const options = { quotes: '1', candle: 'AAPL{=5m}', 'from-time': String(Date.now() - 3600 * 1000) }
const args = process.argv.slice(2)
for (let i = 0; i < args.length; i++) {
  if (args[i].startsWith('--')) options[args[i].slice(2)] = args[++i]
  else positional.push(args[i])
}
const [url, token] = positional
const wantedQuotes = Number(options.quotes)
const SNAPSHOT_END = 0x08
const SNAPSHOT_SNIP = 0x10

const client = new DXLinkWebSocketClient()
client.connect(url)
if (token) client.setAuthToken(token)
client.addErrorListener((error) => {
  console.error('error', JSON.stringify(error))
  process.exit(1)
})

const feed = new DXLinkFeed(client, 'AUTO')
feed.configure({
  acceptAggregationPeriod: 0.1,
  acceptDataFormat: FeedDataFormat.COMPACT,
  acceptEventFields: {
    Quote: ['eventType', 'eventSymbol', 'bidPrice', 'askPrice', 'bidSize', 'askSize'],
    Candle: ['eventType', 'eventSymbol', 'eventFlags', 'time', 'open', 'high', 'low', 'close'],
  },
})
feed.addSubscriptions(
  { type: 'Quote', symbol: 'SPY' },
  { type: 'Candle', symbol: options.candle, fromTime: Number(options['from-time']) },
)

const quotes = []
const candles = []
let snapshotDone = false
feed.addEventListener((events) => {
  for (const event of events) {
    if (event.eventType === 'Quote' && quotes.length < wantedQuotes) quotes.push(event)
    if (event.eventType === 'Candle' && !snapshotDone) {
      candles.push(event)
      snapshotDone = (event.eventFlags & (SNAPSHOT_END | SNAPSHOT_SNIP)) !== 0
    }
  }
  if (quotes.length === wantedQuotes && snapshotDone) {
    console.log(JSON.stringify({ Quote: quotes[0], Candle: candles[0], Quotes: quotes, Candles: candles }))
    client.close()
    process.exit(0)
  }
})
setTimeout(() => {
  console.error(`timeout; saw ${quotes.length} quotes, ${candles.length} candles (snapshot done: ${snapshotDone})`)
  process.exit(1)
}, 20000)
