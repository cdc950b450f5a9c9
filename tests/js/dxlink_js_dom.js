// dxFeed's official JavaScript DOM client (DXLinkDepthOfMarket from @dxfeed/dxlink-api, i.e.
// @dxfeed/dxlink-dom) against a DXLink URL.
// Usage: node dxlink_js_dom.js URL [TOKEN]
// Prints one JSON object {config, time, bids, asks} with the first non-empty book it received
// and the DOM_CONFIG in force, then exits 0; exits 1 on an error or after 20 s without one.
globalThis.WebSocket = require('ws')
const { DXLinkWebSocketClient, DXLinkDepthOfMarket } = require('@dxfeed/dxlink-api')

const [url, token] = process.argv.slice(2)
const client = new DXLinkWebSocketClient()
client.connect(url)
if (token) client.setAuthToken(token)
client.addErrorListener((error) => {
  console.error('error', JSON.stringify(error))
  process.exit(1)
})

const dom = new DXLinkDepthOfMarket(client, { symbol: 'AAPL', sources: ['NTV', 'DEX'] })
dom.configure({ acceptDepthLimit: 5, acceptAggregationPeriod: 0.5, acceptOrderFields: ['price', 'size'] })
dom.addSnapshotListener((time, bids, asks) => {
  if (bids.length === 0 || asks.length === 0) return
  console.log(JSON.stringify({ config: dom.getConfig(), time, bids, asks }))
  client.close()
  process.exit(0)
})
setTimeout(() => {
  console.error('timeout; config ' + JSON.stringify(dom.getConfig()))
  process.exit(1)
}, 20000)
