// bench/run --oidc-peer: node-oidc-provider, the certified reference, as the peer of gatehouse's
// introspection and client_credentials rows. One Node process on loopback, the package's default
// in-memory adapter (an LRU of 1,000 entries, nothing written anywhere), one confidential client.
// bench/run copies this file next to the node_modules it installed and runs
//   node oidc_peer.mjs PORT CLIENT_ID CLIENT_SECRET RESOURCE
// and prints `listening` once the port is open.
import Provider, { errors } from 'oidc-provider';

const [port, clientId, clientSecret, resource] = process.argv.slice(2);

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    // A client_credentials token is for one resource server; an opaque one (a JWT access token
    // cannot be introspected: the endpoint refuses structured tokens). The grant names no
    // `resource`, so the default resource is the one.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return { scope: 'api', audience: resource, accessTokenFormat: 'opaque' };
      },
    },
  },
});

provider.listen(Number(port), '127.0.0.1', () => console.log('listening'));
