// Calls DingTalk's new API with DingTalk's own Node.js SDK, unchanged, through tokend's gateway
// listener: the endpoint is the gateway, the protocol http, and the per-request common headers name
// the app and carry the client key; the SDK's token header holds a placeholder that tokend replaces.
// Env: GW (host:port of the gateway), TOKEND_KEY, APP. Prints one JSON line per call.
const Contact = require('@alicloud/dingtalk/contact_1_0');
const $OpenApi = require('@alicloud/openapi-client');
const $Util = require('@alicloud/tea-util');

async function getUser(client, key) {
  const headers = new Contact.GetUserHeaders({
    xAcsDingtalkAccessToken: 'via-tokend',
    commonHeaders: { 'X-Tokend-App': process.env.APP, Authorization: `Bearer ${key}` },
  });
  try {
    const resp = await client.getUserWithOptions('manager', headers, new $Util.RuntimeOptions({}));
    return { status: resp.statusCode, body: resp.body };
  } catch (e) {
    return { status: e.statusCode, error: e.data || e.message };
  }
}

(async () => {
  const config = new $OpenApi.Config({ protocol: 'http', regionId: 'central', endpoint: process.env.GW });
  const client = new Contact.default(config);
  console.log(JSON.stringify({ call: 'ok', ...(await getUser(client, process.env.TOKEND_KEY)) }));
  console.log(JSON.stringify({ call: 'wrong_key', ...(await getUser(client, 'not-a-key')) }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
