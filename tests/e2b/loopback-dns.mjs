// Preloaded (node --import) by tests/test_domain.py: names under the
// test's domain (E2B_DOMAIN, without its port) resolve to 127.0.0.1
// inside this process, so the SDK's https://api.DOMAIN and
// https://PORT-ID.DOMAIN reach the daemon under test without asking any
// resolver.  Every other name is looked up as usual.
import dns from 'node:dns'

const domain = (process.env.E2B_DOMAIN || '').split(':')[0].toLowerCase()
const lookup = dns.lookup
dns.lookup = function (hostname, options, callback) {
  if (typeof options === 'function') {
    callback = options
    options = {}
  }
  const name = String(hostname).toLowerCase()
  if (domain && (name === domain || name.endsWith('.' + domain))) {
    if (options && options.all) return process.nextTick(callback, null, [{ address: '127.0.0.1', family: 4 }])
    return process.nextTick(callback, null, '127.0.0.1', 4)
  }
  return lookup.call(this, hostname, options, callback)
}
