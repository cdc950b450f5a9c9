// The official dxFeed JavaScript client (@dxfeed/dxlink-api) against a DXLink URL.
// Usage: node dxlink_js_client.js URL [TOKEN]
// Prints one JSON object with the first Quote and the first Candle it received, then exits 0;
// exits 1 on an error or after 20 s without both.
globalThis.WebSocket = require('ws')
const { DXLinkWebSocketClient, DXLinkFeed, FeedDataFormat } = require('@dxfeed/dxlink-api')

const [url, token] = process.argv.slice(2)
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
  { type: 'Candle', symbol: 'AAPL{=5m}', fromTime: Date.now() - 3600 * 1000 },
)

const seen = {}
feed.addEventListener((events) => {
  for (const event of events) {
    if (!(event.eventType in seen)) seen[event.eventType] = event
  }
  if (seen.Quote && seen.Candle) {
    console.log(JSON.stringify(seen))
    client.close()
    process.exit(0)
  }
})
setTimeout(() => {
  console.error('timeout; saw ' + JSON.stringify(Object.keys(seen)))
  process.exit(1)
}, 20000)
