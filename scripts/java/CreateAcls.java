// Creates ACLs through Kafka's Admin API (kafka-clients, on the broker's classpath):
//   java -cp 'KAFKA_HOME/libs/*' CreateAcls.java CLIENT_PROPERTIES PRINCIPAL:TYPE:PATTERN:NAME:OPERATION...
// e.g. User:alice:TOPIC:PREFIXED:alice-:ALL. The client properties file reaches the cluster
// as a super user. Used by scripts/kafka.sh start-secured.
import java.io.FileReader;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class CreateAcls {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileReader r = new FileReader(args[0])) { props.load(r); }
        List<AclBinding> acls = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            String[] f = args[i].split(":");
            String principal = f[0] + ":" + f[1];
            ResourcePattern pattern = new ResourcePattern(
                ResourceType.valueOf(f[2]), f[4], PatternType.valueOf(f[3]));
            acls.add(new AclBinding(pattern, new AccessControlEntry(
                principal, "*", AclOperation.valueOf(f[5]), AclPermissionType.ALLOW)));
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(acls).all().get();
        }
        System.out.println("created " + acls.size() + " ACLs");
    }
}
